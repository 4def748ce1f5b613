"""State-dict key maps between the three layouts a PixArt-Σ transformer comes in.

- official: the `.pth` files of PixArt-alpha/PixArt-sigma (REFERENCE.md §1.5).
- ours: `PixArtSigma.state_dict()`. Module names follow the official ones on purpose, so official <-> ours
  only drops `pos_embed` (a fixed function of the grid, recomputed every call).
- diffusers: `PixArtTransformer2DModel` (separate q/k/v, `transformer_blocks.*`, `adaln_single.*`).

Written by hand because no library maps KV-compressed models: the official and diffusers converters both
drop or reject the `attn.sr`/`attn.norm` keys. In the diffusers layout we write them as extra keys
`transformer_blocks.{i}.attn1.kv_compress.{conv,norm}.*` (and the null caption as
`caption_projection.y_embedding`) plus `kv_compress_*` config fields; diffusers itself ignores them with a
warning, our loader reads them back, so every round trip is exact.

Every converter pops each source key it maps and fails on anything left over: no weight is silently lost.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from pixart.config import SCHEDULER_PREDICTION, ModelConfig


class ConversionError(ValueError):
    """A state dict does not match the layout or config it is converted with."""


def _fail_on_leftovers(sd: dict, layout: str) -> None:
    if sd:
        keys = sorted(sd)
        more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
        raise ConversionError(f"unexpected key {keys[0]!r} in a {layout} state dict; first unmapped: {keys[:5]}{more}")


def _pop(sd: dict, key: str, layout: str) -> Tensor:
    try:
        return sd.pop(key)
    except KeyError:
        raise ConversionError(f"missing key {key!r} in the {layout} state dict") from None


# ---- official <-> ours -------------------------------------------------------------------------------------------


def official_to_ours(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official checkpoint -> ours: strip the DDP `module.` prefix, drop the fixed `pos_embed`."""
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("module.")
        if key == "pos_embed":
            continue
        out[key] = value
    return out


def ours_to_official(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Ours -> official: the same names (the official loader recomputes `pos_embed` itself)."""
    return dict(sd)


# ---- ours <-> diffusers ----------------------------------------------------------------------------------------

# (ours, diffusers) for tensors that map one to one; `{i}` is a block index.
_GLOBAL_PAIRS = [
    ("x_embedder.proj", "pos_embed.proj"),
    ("t_embedder.mlp.0", "adaln_single.emb.timestep_embedder.linear_1"),
    ("t_embedder.mlp.2", "adaln_single.emb.timestep_embedder.linear_2"),
    ("t_block.1", "adaln_single.linear"),
    ("y_embedder.y_proj.fc1", "caption_projection.linear_1"),
    ("y_embedder.y_proj.fc2", "caption_projection.linear_2"),
    ("final_layer.linear", "proj_out"),
]
_MICRO_PAIRS = [
    ("csize_embedder.mlp.0", "adaln_single.emb.resolution_embedder.linear_1"),
    ("csize_embedder.mlp.2", "adaln_single.emb.resolution_embedder.linear_2"),
    ("ar_embedder.mlp.0", "adaln_single.emb.aspect_ratio_embedder.linear_1"),
    ("ar_embedder.mlp.2", "adaln_single.emb.aspect_ratio_embedder.linear_2"),
]
_BLOCK_PAIRS = [
    ("attn.proj", "attn1.to_out.0"),
    ("cross_attn.q_linear", "attn2.to_q"),
    ("cross_attn.proj", "attn2.to_out.0"),
    ("mlp.fc1", "ff.net.0.proj"),
    ("mlp.fc2", "ff.net.2"),
    ("attn.sr", "attn1.kv_compress.conv"),  # extra keys: KV compression is ours, not diffusers'
    ("attn.norm", "attn1.kv_compress.norm"),
]
_NULL_CAPTION = ("y_embedder.y_embedding", "caption_projection.y_embedding")  # extra key, see module docstring


def _pairs(cfg: ModelConfig) -> list[tuple[str, str]]:
    """Full parameter-name pairs (with .weight/.bias) that map one to one for this config."""
    pairs = [(f"{a}.{s}", f"{b}.{s}") for a, b in _GLOBAL_PAIRS for s in ("weight", "bias")]
    if cfg.micro_condition:
        pairs += [(f"{a}.{s}", f"{b}.{s}") for a, b in _MICRO_PAIRS for s in ("weight", "bias")]
    pairs.append(("final_layer.scale_shift_table", "scale_shift_table"))
    for i in range(cfg.depth):
        pairs.append((f"blocks.{i}.scale_shift_table", f"transformer_blocks.{i}.scale_shift_table"))
        for a, b in _BLOCK_PAIRS:
            if a in ("attn.sr", "attn.norm") and not (cfg.kv_factor(i) > 1 and cfg.kv_compress_sampling == "conv"):
                continue
            pairs += [(f"blocks.{i}.{a}.{s}", f"transformer_blocks.{i}.{b}.{s}") for s in ("weight", "bias")]
    return pairs


# Fused ours tensors split into several diffusers tensors (chunked along dim 0).
_FUSED = [
    ("attn.qkv", ("attn1.to_q", "attn1.to_k", "attn1.to_v")),
    ("cross_attn.kv_linear", ("attn2.to_k", "attn2.to_v")),
]


def ours_to_diffusers(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Our state dict -> `PixArtTransformer2DModel` layout (+ the extra keys described above)."""
    sd = dict(sd)
    out: dict[str, Tensor] = {}
    for a, b in _pairs(cfg):
        out[b] = _pop(sd, a, "pixart")
    for i in range(cfg.depth):
        for fused, parts in _FUSED:
            for s in ("weight", "bias"):
                chunks = _pop(sd, f"blocks.{i}.{fused}.{s}", "pixart").chunk(len(parts), dim=0)
                for part, chunk in zip(parts, chunks, strict=True):
                    out[f"transformer_blocks.{i}.{part}.{s}"] = chunk.clone()
    if _NULL_CAPTION[0] in sd:
        out[_NULL_CAPTION[1]] = sd.pop(_NULL_CAPTION[0])
    _fail_on_leftovers(sd, "pixart")
    return out


def _stack_rows(chunks: list[Tensor]) -> Tensor:
    """`torch.cat(chunks, dim=0)`; for meta tensors (shape-only reads) an empty meta tensor of the joined shape,
    since `torch.cat` on meta tensors imports torch._dynamo, two seconds of a `pixart generate` on a small CPU."""
    if chunks[0].is_meta:
        rows = sum(c.shape[0] for c in chunks)
        return torch.empty((rows, *chunks[0].shape[1:]), dtype=chunks[0].dtype, device="meta")
    return torch.cat(chunks, dim=0)


def diffusers_to_ours(sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """`PixArtTransformer2DModel` state dict (optionally with our extra keys) -> ours.

    The null caption is absent from diffusers' own files; callers keep the model's initial buffer then.
    """
    sd = dict(sd)
    sd.pop("pos_embed.pos_embed", None)  # diffusers may save its fixed PE buffer
    out: dict[str, Tensor] = {}
    for a, b in _pairs(cfg):
        out[a] = _pop(sd, b, "diffusers")
    for i in range(cfg.depth):
        for fused, parts in _FUSED:
            for s in ("weight", "bias"):
                chunks = [_pop(sd, f"transformer_blocks.{i}.{part}.{s}", "diffusers") for part in parts]
                out[f"blocks.{i}.{fused}.{s}"] = _stack_rows(chunks)
    if _NULL_CAPTION[1] in sd:
        out[_NULL_CAPTION[0]] = sd.pop(_NULL_CAPTION[1])
    _fail_on_leftovers(sd, "diffusers")
    return out


# ---- configs -------------------------------------------------------------------------------------------------------


def config_to_diffusers(cfg: ModelConfig) -> dict:
    """`config.json` for `PixArtTransformer2DModel`, plus our `kv_compress_*` fields when KV is on and our
    `prediction_type` for a v-prediction model (diffusers itself reads that from the scheduler's config)."""
    if cfg.mlp_ratio != 4.0:
        raise ConversionError(f"mlp_ratio={cfg.mlp_ratio}: the diffusers layout only supports 4.0")
    d = {
        "_class_name": "PixArtTransformer2DModel",
        "num_attention_heads": cfg.num_heads,
        "attention_head_dim": cfg.head_dim,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "num_layers": cfg.depth,
        "dropout": 0.0,
        "norm_num_groups": 32,
        "cross_attention_dim": cfg.hidden_size,
        "attention_bias": True,
        "sample_size": cfg.sample_size,
        "patch_size": cfg.patch_size,
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": 1000,
        "upcast_attention": False,
        "norm_type": "ada_norm_single",
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,
        "interpolation_scale": cfg.pe_interpolation,
        "use_additional_conditions": cfg.micro_condition,
        "caption_channels": cfg.caption_channels,
        "attention_type": "default",
    }
    if cfg.kv_compress_layers:
        d.update(
            kv_compress_layers=list(cfg.kv_compress_layers),
            kv_compress_factor=cfg.kv_compress_factor,
            kv_compress_sampling=cfg.kv_compress_sampling,
        )
    if cfg.prediction != "epsilon":
        d["prediction_type"] = SCHEDULER_PREDICTION[cfg.prediction]
    return d


def config_from_diffusers(d: dict, max_tokens: int | None = None) -> ModelConfig:
    """Our config from a diffusers `config.json`, applying diffusers' own defaults for missing fields."""
    heads = d.get("num_attention_heads", 16)
    hidden = heads * d.get("attention_head_dim", 72)
    in_ch = d.get("in_channels", 4)
    out_ch = d.get("out_channels") or in_ch
    sample_size = d.get("sample_size", 128)
    if out_ch not in (in_ch, 2 * in_ch):
        raise ConversionError(f"out_channels={out_ch} with in_channels={in_ch}: expected {in_ch} or {2 * in_ch}")
    if d.get("norm_type", "ada_norm_single") != "ada_norm_single":
        raise ConversionError(f"norm_type={d['norm_type']!r}: only 'ada_norm_single' is a PixArt transformer")
    micro = d.get("use_additional_conditions")
    pe = d.get("interpolation_scale")
    return ModelConfig(
        depth=d.get("num_layers", 28),
        hidden_size=hidden,
        num_heads=heads,
        patch_size=d.get("patch_size", 2),
        in_channels=in_ch,
        learn_sigma=out_ch == 2 * in_ch,
        caption_channels=d.get("caption_channels") or 4096,
        max_tokens=max_tokens or 300,
        sample_size=sample_size,
        # diffusers' defaults when absent (REFERENCE.md §2.1)
        pe_interpolation=float(pe) if pe is not None else float(max(sample_size // 64, 1)),
        micro_condition=bool(micro) if micro is not None else sample_size == 128,
        kv_compress_layers=tuple(d.get("kv_compress_layers", ())),
        kv_compress_factor=int(d.get("kv_compress_factor", 1)),
        kv_compress_sampling=d.get("kv_compress_sampling", "conv"),
        prediction=_prediction_from_diffusers(d.get("prediction_type", "epsilon")),
    )


def _prediction_from_diffusers(name: str) -> str:
    """Our `prediction` for a diffusers `prediction_type` name."""
    ours = {v: k for k, v in SCHEDULER_PREDICTION.items()}
    if name not in ours:
        raise ConversionError(f"prediction_type={name!r}: allowed are {', '.join(ours)}")
    return ours[name]


_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def infer_config(sd: dict[str, Tensor], base: ModelConfig | None = None) -> ModelConfig:
    """Infer depth, width, heads, channels and KV layers from an official/ours state dict's shapes.

    What shapes cannot tell (`pe_interpolation`, `sample_size`, the KV sampling of non-conv modes, the head
    count when no `base` is given: 72-wide heads are assumed, as in every released model) comes from `base`.
    """
    base = base or ModelConfig()
    try:
        hidden, in_ch, patch, _ = sd["x_embedder.proj.weight"].shape
        out_dim = sd["final_layer.linear.weight"].shape[0]
        caption_channels = sd["y_embedder.y_proj.fc1.weight"].shape[1]
        mlp_hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as e:
        raise ConversionError(f"missing key {e.args[0]!r}: not a PixArt transformer state dict") from None
    depth = 1 + max(int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k)))
    out_ch = out_dim // (patch * patch)
    kv_layers = sorted({int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k)) and ".attn.sr." in k})
    if kv_layers:  # conv compression is visible in the weights
        kv = {
            "kv_compress_layers": tuple(kv_layers),
            "kv_compress_factor": sd[f"blocks.{kv_layers[0]}.attn.sr.weight"].shape[-1],
            "kv_compress_sampling": "conv",
        }
    elif base.kv_compress_sampling != "conv":  # parameter-free samplings leave no trace: trust `base`
        kv = {}
    else:
        kv = {"kv_compress_layers": ()}
    # 72-wide heads as in every released model; the largest head count <= hidden/72 that divides the width.
    heads = (
        base.num_heads
        if hidden == base.hidden_size
        else next(h for h in range(max(1, hidden // 72), 0, -1) if hidden % h == 0)
    )
    max_tokens = sd["y_embedder.y_embedding"].shape[0] if "y_embedder.y_embedding" in sd else base.max_tokens
    return base.replace(
        depth=depth,
        hidden_size=hidden,
        num_heads=heads,
        patch_size=patch,
        in_channels=in_ch,
        learn_sigma=out_ch == 2 * in_ch,
        mlp_ratio=mlp_hidden / hidden,
        caption_channels=caption_channels,
        max_tokens=max_tokens,
        micro_condition="csize_embedder.mlp.0.weight" in sd,
        **kv,
    )
