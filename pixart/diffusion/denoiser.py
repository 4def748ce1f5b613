"""The one seam between the network and the samplers: `denoise(x, t) -> model output for the scheduler`.

It feeds the caption to the transformer, applies classifier-free guidance (Ho & Salimans 2022) and keeps or
drops the learned-variance channels, so samplers never see conditioning or guidance.

Guidance semantics (REFERENCE.md §1.6):
  - `"diffusers"` (default): the unconditional branch is the negative prompt's own T5 embedding with its own
    mask (for the default empty negative: T5("") attended through its single </s> token), as in diffusers'
    PixArtSigmaPipeline.
  - `"official"`: the same null embedding, attended with the *prompt's* mask, as the official DPM-Solver path
    (`mask.repeat` in PixArtMS.forward), i.e. the null branch sees as many tokens as the prompt has.
Guidance is applied to all latent channels of ε (the official IDDPM path guides only 3 of 4, a DiT quirk we
do not reproduce). The learned variance values are not guided: they come from the conditional branch, as
in the official IDDPM sampler; extrapolating them would push the interpolation weight outside [-1, 1].
`guidance == 1` runs the conditional branch only (one forward instead of two).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pixart.model.attention import trim_caption_padding

CFG_SEMANTICS = ("diffusers", "official")

Denoiser = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Conditioning:
    """Caption features for a batch: prompt (B, L, D) + mask (B, L), and the negative/null branch alike."""

    embeds: Tensor
    mask: Tensor
    null_embeds: Tensor | None = None
    null_mask: Tensor | None = None


def make_denoiser(
    model: torch.nn.Module,
    cond: Conditioning,
    guidance: float,
    *,
    semantics: str = "diffusers",
    keep_variance: bool = False,
    image_size: tuple[int, int] | None = None,
) -> Denoiser:
    """Wrap `model` as `denoise(x (B, C, H, W), t) -> ε (B, C, H, W)` (or (B, 2C, H, W) with `keep_variance`).

    Args:
        model: `PixArtSigma`-like, `model(x, t, caption, mask) -> (B, C_out, H, W)`.
        cond: the batch's caption features; `null_*` are needed unless `guidance == 1`.
        guidance: CFG scale g: `ε = ε_null + g (ε_cond - ε_null)`; 1 disables guidance.
        semantics: which mask the null branch uses, see the module docstring.
        keep_variance: also return the variance channels (for samplers with learned variance).
        image_size: (height, width) in pixels, passed as resolution and aspect-ratio micro-conditions to
            models that take them (PixArt-α 1024-MS); ignored otherwise.
    """
    if semantics not in CFG_SEMANTICS:
        raise ValueError(f"unknown CFG semantics {semantics!r}; allowed: {', '.join(CFG_SEMANTICS)}")
    guided = guidance != 1.0
    if guided and cond.null_embeds is None:
        raise ValueError(f"guidance {guidance} needs the negative/null caption embedding")
    model_cfg = getattr(model, "cfg", None)
    in_channels = getattr(model_cfg, "in_channels", None)
    micro = image_size if getattr(model_cfg, "micro_condition", False) else None

    if guided:
        null_mask = cond.mask if semantics == "official" else cond.null_mask
        # One forward of the doubled batch, null half first (diffusers' order: identical numerics).
        caption = torch.cat([cond.null_embeds, cond.embeds])  # (2B, L, D)
        mask = torch.cat([null_mask.to(cond.mask.dtype), cond.mask])  # (2B, L)
    else:
        caption, mask = cond.embeds, cond.mask
    caption, mask = trim_caption_padding(caption, mask)  # (B', L', D), (B', L'): same output, less work

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        channels = in_channels or x.shape[1]
        x_in = torch.cat([x, x]) if guided else x  # (2B or B, C, H, W)
        t_in = torch.as_tensor(t, device=x.device).reshape(-1).expand(x_in.shape[0])  # (2B or B,)
        extra = {}
        if micro is not None:  # (h, w) and h / w per sample, as diffusers' PixArt-α pipeline
            n = x_in.shape[0]
            extra["resolution"] = torch.tensor([list(micro)], dtype=torch.float32, device=x.device).expand(n, 2)
            extra["aspect_ratio"] = torch.full((n, 1), micro[0] / micro[1], dtype=torch.float32, device=x.device)
        out = model(x_in, t_in, caption, mask, **extra).float()  # (2B or B, C_out, H, W)
        if guided:
            out_null, out_cond = out.chunk(2)  # 2 x (B, C_out, H, W)
            eps = out_null[:, :channels] + guidance * (out_cond[:, :channels] - out_null[:, :channels])
            variance = out_cond[:, channels:]
        else:
            eps, variance = out[:, :channels], out[:, channels:]
        if keep_variance and variance.shape[1] == channels:
            return torch.cat([eps, variance], dim=1)  # (B, 2C, H, W)
        return eps  # (B, C, H, W)

    return denoise
