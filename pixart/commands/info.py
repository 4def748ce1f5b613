"""Print a model's config (every field) and parameter count, for a preset name or a checkpoint file/folder."""

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
        help="a preset name (e.g. PixArt-Sigma-XL-2-1024-MS) or a checkpoint file or folder",
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


def run(args: argparse.Namespace) -> int:
    if args.model is None:
        raise ValueError("no model is bundled yet: pass a preset name (see `pixart info --help`) or a checkpoint path")
    info = describe(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in ("source", "format", "layout", "dtype", "config_from"):
        if key in info:
            print(f"{key}: {info[key]}")
    print(f"parameters: {info['parameters']:,}")
    print("config:")
    width = max(map(len, info["config"]))
    for key, value in info["config"].items():
        print(f"  {key:<{width}}  {value}")
    return 0
