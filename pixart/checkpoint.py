"""Load, save and convert PixArt-Σ transformer checkpoints in every layout they come in.

Formats (`load_transformer` detects which):
- pixart: our own `.safetensors` file, the config as JSON in the safetensors metadata (key "pixart_config").
- official: the `.pth` files of PixArt-alpha/PixArt-sigma (`{'state_dict': ...}` or a bare dict, optional
  `module.` prefixes and `pos_embed`), or the same keys in a `.safetensors` file without our metadata.
- diffusers: a `PixArtTransformer2DModel` folder (`config.json` + `diffusion_pytorch_model[.fp16].safetensors`
  / `.bin`, possibly sharded with an index), a whole pipeline folder (its `transformer/` is used), or a bare
  diffusers-layout weights file.

Files without a config get depth, width, channels, caption length and KV layers from their shapes
(`convert.infer_config`); what shapes cannot tell (`pe_interpolation`, `sample_size`, the head count) comes
from `preset`/`config`, else from a released name in the file name, else the 1024 preset, with a warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pixart.checkpoint_io import (
    CheckpointError,
    atomic_output,
    check_writable,
    dtype_summary,
    load_state_dict_file,
    locate_weights,
    read_weights,
    write_safetensors,
    write_torch,
)
from pixart.config import PRESETS, ModelConfig, get_preset
from pixart.convert import (
    ConversionError,
    config_from_diffusers,
    config_to_diffusers,
    diffusers_to_ours,
    infer_config,
    official_to_ours,
    ours_to_diffusers,
    ours_to_official,
)

if TYPE_CHECKING:
    from pixart.model import PixArtSigma

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "FORMATS",
    "convert_checkpoint",
    "load_state_dict_file",
    "load_transformer",
    "read_checkpoint",
    "save_transformer",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

FORMATS = ("pixart", "diffusers", "official")
CONFIG_METADATA_KEY = "pixart_config"
DEFAULT_PRESET = "PixArt-Sigma-XL-2-1024-MS"
MICRO_CONDITION_PRESET = "PixArt-XL-2-1024-MS"  # the only released micro-conditioned model (PixArt-α)
NULL_CAPTION_KEY = "y_embedder.y_embedding"
DIFFUSERS_CLASSES = ("PixArtTransformer2DModel", "Transformer2DModel")


@dataclass(frozen=True)
class CheckpointInfo:
    """What `read_checkpoint` found: where, in which layout, and where the config came from."""

    path: Path  # the weights file, or the shard index
    format: str  # pixart | official | diffusers
    detail: str  # e.g. "pipeline folder, sharded safetensors"
    dtype: str  # floating dtype(s) as stored, most common first
    config_source: str  # "file", or what was assumed


# ---- configs for files that carry none -----------------------------------------------------------------------------


def _preset_from_name(path: Path) -> str | None:
    """The released name a file is called by, e.g. 'PixArt-Sigma-XL-2-1024-MS.pth' -> that preset."""
    name = path.name.lower()
    for preset in sorted(PRESETS, key=len, reverse=True):  # longest first: '...-1024-MS-KV' before '...-1024-MS'
        if preset.lower() in name:
            return preset
    return None


def _base_config(
    path: Path, preset: str | None, config: ModelConfig | None, micro: bool, pe: float | None, size: int | None
) -> tuple[ModelConfig, str]:
    """Defaults for what shapes cannot tell, and a description of where they came from."""
    if config is not None:
        return config, "given config"
    if preset is not None:
        return get_preset(preset), f"preset {preset}"
    guessed = _preset_from_name(path)
    if guessed is not None:
        return get_preset(guessed), f"preset {guessed} (from the file name)"
    fallback = MICRO_CONDITION_PRESET if micro else DEFAULT_PRESET
    base = get_preset(fallback)
    if pe is not None or size is not None:  # one flag given: the Sigma rule pe_interpolation = image side / 512
        size = size if size is not None else max(1, round(pe * 64))
        pe = pe if pe is not None else size / 64
        return base.replace(sample_size=size, pe_interpolation=float(pe)), "flags"
    logger.warning(
        "%s carries no config: assumed preset %s (pe_interpolation=%s, sample_size=%s); if that is wrong pass "
        "preset= / pe_interpolation= / sample_size= (CLI: --preset, --pe-interpolation, --sample-size)",
        path,
        fallback,
        base.pe_interpolation,
        base.sample_size,
    )
    return base, f"assumed preset {fallback}"


def _warn_if_shapes_differ(path: Path, cfg: ModelConfig, base: ModelConfig, source: str) -> None:
    fields = ("depth", "hidden_size", "in_channels", "caption_channels", "micro_condition", "kv_compress_layers")
    diffs = [f"{f} ({getattr(cfg, f)} vs {getattr(base, f)})" for f in fields if getattr(cfg, f) != getattr(base, f)]
    if diffs and source.startswith("preset"):  # a preset that was named or guessed, not the fallback
        logger.warning(
            "%s: the weights differ from %s in %s; using the weights' shapes", path, source, ", ".join(diffs)
        )
    if cfg.hidden_size != base.hidden_size:
        logger.warning("%s: head count not stored in the file; assumed %d heads", path, cfg.num_heads)


def _diffusers_skeleton(sd: dict[str, Tensor], base: ModelConfig) -> ModelConfig:
    """Depth, micro-conditioning and conv-KV layers of a diffusers state dict without config.json."""
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")}
    kv = sorted(i for i in blocks if f"transformer_blocks.{i}.attn1.kv_compress.conv.weight" in sd)
    kv_fields = {"kv_compress_layers": ()}
    if kv:
        factor = sd[f"transformer_blocks.{kv[0]}.attn1.kv_compress.conv.weight"].shape[-1]
        kv_fields = {"kv_compress_layers": tuple(kv), "kv_compress_factor": factor, "kv_compress_sampling": "conv"}
    return base.replace(
        depth=1 + max(blocks, default=0),
        micro_condition="adaln_single.emb.resolution_embedder.linear_1.weight" in sd,
        **kv_fields,
    )


def _apply_flags(cfg: ModelConfig, pe: float | None, size: int | None) -> ModelConfig:
    changes = {}
    if pe is not None:
        changes["pe_interpolation"] = float(pe)
    if size is not None:
        changes["sample_size"] = int(size)
    return cfg.replace(**changes) if changes else cfg


# ---- reading --------------------------------------------------------------------------------------------------------


def read_checkpoint(
    path: str | Path,
    *,
    preset: str | None = None,
    pe_interpolation: float | None = None,
    sample_size: int | None = None,
    config: ModelConfig | None = None,
    ema: bool = False,
    meta: bool = False,
) -> tuple[ModelConfig, dict[str, Tensor], CheckpointInfo]:
    """The config and our-layout state dict of any supported checkpoint (see the module docstring).

    Args:
        preset, config: defaults for what a file without config cannot tell (config wins; not both).
        pe_interpolation, sample_size: override the file's / preset's values.
        ema: official training checkpoints: read `state_dict_ema`.
        meta: shapes only (meta tensors), for inspection without reading the weights.

    Returns:
        (config, state dict in our layout, CheckpointInfo). The null caption may be missing (diffusers files).
    """
    if preset is not None and config is not None:
        raise ValueError("pass preset or config, not both")
    if preset is not None:
        get_preset(preset)  # an unknown name is an error even where the file carries its own config
    path = Path(path)
    weights, diffusers_config, detail = locate_weights(path)
    raw, metadata = read_weights(weights, ema=ema, meta=meta)
    dtype = dtype_summary(raw)
    try:
        if diffusers_config is not None:
            fmt, source = "diffusers", "file"
            cfg = _config_from_json(diffusers_config, raw, preset, config)
            sd = diffusers_to_ours(raw, cfg)
        elif CONFIG_METADATA_KEY in metadata:
            fmt, source = "pixart", "file"
            cfg = _config_from_metadata(weights, metadata[CONFIG_METADATA_KEY])
            sd = dict(raw)
        else:
            diffusers_layout = any(k.startswith(("transformer_blocks.", "adaln_single.")) for k in raw)
            fmt = "diffusers" if diffusers_layout else "official"
            micro = any(k.startswith(("csize_embedder.", "adaln_single.emb.resolution_embedder.")) for k in raw)
            base, source = _base_config(weights, preset, config, micro, pe_interpolation, sample_size)
            if diffusers_layout:
                sd = diffusers_to_ours(raw, _diffusers_skeleton(raw, base))
            else:
                sd = official_to_ours(raw)
            cfg = infer_config(sd, base)
            _warn_if_shapes_differ(weights, cfg, base, source)
    except (ConversionError, RuntimeError) as e:
        raise CheckpointError(f"{weights}: {e}") from None
    if source == "file" and (preset is not None or config is not None):
        logger.info("%s carries its config; ignoring preset/config (override with pe_interpolation/sample_size)", path)
    cfg = _apply_flags(cfg, pe_interpolation, sample_size)
    info = CheckpointInfo(path=weights, format=fmt, detail=detail, dtype=dtype, config_source=source)
    logger.info("%s: %s checkpoint (%s), %s, config from %s", path, fmt, detail, dtype, source)
    return cfg, sd, info


def _config_from_json(
    config_path: Path, raw: dict[str, Tensor], preset: str | None, config: ModelConfig | None
) -> ModelConfig:
    try:
        d = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    cls = d.get("_class_name", "PixArtTransformer2DModel")
    if cls not in DIFFUSERS_CLASSES:
        raise CheckpointError(f"{config_path}: describes a {cls}, not a PixArt transformer")
    null = raw.get("caption_projection.y_embedding")
    if null is not None:  # our extra key: the caption length is in the file
        max_tokens = null.shape[0]
    elif config is not None or preset is not None:
        max_tokens = (config or get_preset(preset)).max_tokens
    else:  # PixArt-α (micro-conditioned) captions are 120 tokens, Σ's 300
        micro = d.get("use_additional_conditions")
        micro = micro if micro is not None else d.get("sample_size", 128) == 128
        max_tokens = get_preset(MICRO_CONDITION_PRESET if micro else DEFAULT_PRESET).max_tokens
    return config_from_diffusers(d, max_tokens=max_tokens)


def _config_from_metadata(path: Path, text: str) -> ModelConfig:
    try:
        return ModelConfig.from_json(text)
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid '{CONFIG_METADATA_KEY}' metadata ({e})") from None


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_state_dict(sd: dict[str, Tensor], expected: dict[str, Tensor], where: str | Path) -> None:
    """Raise CheckpointError (one line) unless `sd` has exactly `expected`'s keys and shapes.

    The null caption (`y_embedder.y_embedding`) may be missing: diffusers' own files do not store it.
    """

    def listing(keys: list[str]) -> str:
        return ", ".join(keys[:4]) + (f" (and {len(keys) - 4} more)" if len(keys) > 4 else "")

    missing = sorted(set(expected) - set(sd) - {NULL_CAPTION_KEY})
    unexpected = sorted(set(sd) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys the model needs: {listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {listing(unexpected)}")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))
    for key, t in sd.items():
        if _shape(t) != _shape(expected[key]):
            raise CheckpointError(f"{where}: {key}: checkpoint {_shape(t)} vs model {_shape(expected[key])}")


def build_model(
    cfg: ModelConfig,
    sd: dict[str, Tensor],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    where: str | Path = "state dict",
) -> PixArtSigma:
    """`PixArtSigma(cfg)` holding exactly `sd` (our layout), built on the meta device so nothing is initialised twice.

    Args:
        dtype: None keeps the checkpoint's dtype (that of the patch-embedding weight) for all float tensors.

    Returns:
        The model in eval mode.
    """
    from pixart.model import PixArtSigma
    from pixart.model.embeddings import CaptionEmbedder

    with torch.device("meta"):
        model = PixArtSigma(cfg)
    check_state_dict(sd, model.state_dict(), where)
    sd = dict(sd)
    if NULL_CAPTION_KEY not in sd:  # diffusers files: keep the model's own initial null caption
        logger.debug("%s has no %s; keeping the model's initial null caption", where, NULL_CAPTION_KEY)
        sd[NULL_CAPTION_KEY] = CaptionEmbedder(cfg.caption_channels, 1, cfg.max_tokens).y_embedding
    dtype = dtype or sd["x_embedder.proj.weight"].dtype
    device = torch.device(device or "cpu")
    sd = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a tensor the state dict cannot carry (a non-persistent buffer): a bug in this loader
        raise RuntimeError(f"not materialised after loading: {left}")
    return model.eval()


def load_transformer(
    path: str | Path,
    *,
    preset: str | None = None,
    pe_interpolation: float | None = None,
    sample_size: int | None = None,
    config: ModelConfig | None = None,
    ema: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> PixArtSigma:
    """Load a PixArt-Σ transformer from any supported checkpoint file or folder (see the module docstring).

    Args:
        path: a `.safetensors`/`.pth`/`.bin` file, a diffusers transformer folder or a pipeline folder.
        preset, config: defaults for what a file without config cannot tell (pe_interpolation, sample_size,
            heads); without either, a released name in the file name, else the 1024 preset (with a warning).
        pe_interpolation, sample_size: override the file's / preset's values.
        ema: official training checkpoints: load `state_dict_ema` instead of `state_dict`.
        device: where to put the weights (default CPU).
        dtype: floating dtype; None keeps the checkpoint's.

    Returns:
        The model in eval mode; `model.cfg` is its config.
    """
    cfg, sd, _ = read_checkpoint(
        path, preset=preset, pe_interpolation=pe_interpolation, sample_size=sample_size, config=config, ema=ema
    )
    return build_model(cfg, sd, device=device, dtype=dtype, where=path)


# ---- writing --------------------------------------------------------------------------------------------------------


def save_transformer(model: PixArtSigma, path: str | Path, *, overwrite: bool = True) -> Path:
    """Save weights + config as one `.safetensors` file (config JSON in the metadata), atomically.

    An existing file is replaced in one rename (set `overwrite=False` to refuse instead).
    """
    return write_checkpoint(model, path, "pixart", overwrite=overwrite)


def _check_destination(dst: Path, to: str) -> None:
    if to not in FORMATS:
        raise ValueError(f"unknown checkpoint format {to!r}; choose one of {', '.join(FORMATS)}")
    suffix = dst.suffix.lower()
    if to == "pixart" and suffix != ".safetensors":
        raise ValueError(f"{dst}: pixart checkpoints are .safetensors files")
    if to == "official" and suffix not in (".pth", ".pt", ".safetensors"):
        raise ValueError(f"{dst}: official checkpoints are .pth (or .safetensors) files")
    if to == "diffusers" and suffix in (".safetensors", ".pth", ".pt", ".bin"):
        raise ValueError(f"{dst}: the diffusers layout is a folder, not a {suffix} file")


def write_checkpoint(model: PixArtSigma, dst: str | Path, to: str, *, overwrite: bool = False) -> Path:
    """Write `model` in layout `to` (pixart | diffusers | official); atomic, nothing left behind on failure."""
    dst = Path(dst)
    _check_destination(dst, to)
    cfg, sd = model.cfg, model.state_dict()
    if to == "diffusers":
        dconfig = json.dumps(config_to_diffusers(cfg), indent=2, sort_keys=True) + "\n"
        tensors = ours_to_diffusers(sd, cfg)
        with atomic_output(dst, overwrite=overwrite, folder=True) as tmp:
            (tmp / "config.json").write_text(dconfig)
            write_safetensors(tensors, tmp / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
    else:
        with atomic_output(dst, overwrite=overwrite) as tmp:
            if to == "pixart":
                write_safetensors(sd, tmp, metadata={"format": "pt", CONFIG_METADATA_KEY: cfg.to_json()})
            elif dst.suffix.lower() == ".safetensors":
                write_safetensors(ours_to_official(sd), tmp, metadata={"format": "pt"})
            else:
                write_torch(ours_to_official(sd), tmp)
    logger.info("wrote %s checkpoint %s", to, dst)
    return dst


def convert_checkpoint(src: str | Path, dst: str | Path, to: str, *, overwrite: bool = False, **load_kwargs) -> Path:
    """Convert any supported checkpoint `src` to layout `to` (pixart | diffusers | official) at `dst`.

    Args:
        to: "pixart" (dst: .safetensors), "diffusers" (dst: a folder), "official" (dst: .pth or .safetensors).
        overwrite: replace an existing `dst` (default: refuse with FileExistsError before reading `src`).
        load_kwargs: passed to `load_transformer` (preset, pe_interpolation, sample_size, config, ema, dtype).
    """
    dst = Path(dst)
    _check_destination(dst, to)
    check_writable(dst, overwrite, folder=to == "diffusers")
    model = load_transformer(src, **load_kwargs)
    return write_checkpoint(model, dst, to, overwrite=overwrite)
