"""Print a model's config (every field) and parameter count, for a preset name or a checkpoint file/folder.

Without an argument, describes the bundled demo model (a pipeline folder: also each component's size on disk).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="PRESET_OR_PATH",
        help="a preset (e.g. PixArt-Sigma-XL-2-1024-MS) or a checkpoint file or folder; None: the bundled demo model",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def describe(model: str) -> dict:
    """Config, parameter count and (for a path) format and dtype of a preset or checkpoint, without its weights."""
    import torch

    from pixart.checkpoint import check_state_dict, read_checkpoint
    from pixart.config import PRESETS
    from pixart.model import PixArtSigma

    path = Path(model)
    if path.exists():
        cfg, sd, found = read_checkpoint(path, meta=True)  # headers / memory map only
        out = {
            "source": str(path),
            "format": found.format,
            "layout": found.detail,
            "dtype": found.dtype,
            "config_from": found.config_source,
        }
    elif model in PRESETS:
        cfg, sd = PRESETS[model], None
        out = {"source": f"preset {model}"}
    else:
        raise FileNotFoundError(
            f"{model!r} is neither a preset nor an existing file or folder; presets: {', '.join(PRESETS)}"
        )
    with torch.device("meta"):  # shapes only: instant even for the full model
        net = PixArtSigma(cfg)
    if sd is not None:
        check_state_dict(sd, net.state_dict(), path)
    out["parameters"] = net.num_parameters()
    out["config"] = cfg.to_dict()
    return out


def components(folder: Path) -> dict[str, float]:
    """MB on disk of each component folder of a pipeline folder (transformer/, text_encoder/, ...)."""
    return {
        part.name: round(sum(f.stat().st_size for f in part.rglob("*") if f.is_file()) / 2**20, 2)
        for part in sorted(folder.iterdir())
        if part.is_dir()
    }


def run(args: argparse.Namespace) -> int:
    from pixart.commands.generate import BUNDLED_MODEL

    model = args.model
    if model is None:
        if not BUNDLED_MODEL.is_dir():
            raise ValueError(
                "no model is bundled yet: pass a preset name (see `pixart info --help`) or a checkpoint path"
            )
        model = str(BUNDLED_MODEL)
    info = describe(model)
    if Path(model).is_dir() and (Path(model) / "model_index.json").is_file():
        info["components_mb"] = components(Path(model))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in ("source", "format", "layout", "dtype", "config_from"):
        if key in info:
            print(f"{key}: {info[key]}")
    print(f"parameters: {info['parameters']:,}")
    if "components_mb" in info:
        sizes = info["components_mb"]
        print(
            f"components (MB on disk, {sum(sizes.values()):.1f} in all): "
            + ", ".join(f"{k} {v}" for k, v in sizes.items())
        )
    print("config:")
    width = max(map(len, info["config"]))
    for key, value in info["config"].items():
        print(f"  {key:<{width}}  {value}")
    return 0
