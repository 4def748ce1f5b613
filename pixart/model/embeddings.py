"""Embedders: patches, timesteps, micro-conditions, captions, and the 2-D sin-cos positional embedding.

PixArt-Σ (Chen et al. 2024) keeps PixArt-α's embedders unchanged; module and parameter names follow the
official checkpoints (REFERENCE.md §1.5) so their state dicts load without renaming.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---- positional embedding ------------------------------------------------------------------------------------


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """Transformer sin-cos embedding of 1-D positions: (N,) -> (N, dim), `cat[sin, cos]`."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    angles = positions.double()[:, None] * omega[None]  # (N, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (N, dim)


@functools.lru_cache(maxsize=32)
def _sincos_2d_cached(dim: int, h: int, w: int, base_size: int, pe_interpolation: float) -> Tensor:
    # Each axis is squeezed into [0, base_size / pe_interpolation) whatever its token count: this is how
    # PixArt reuses one embedding across resolutions and aspect ratios (REFERENCE.md §1.3).
    pos_h = torch.arange(h, dtype=torch.float32) / (h / base_size) / pe_interpolation  # (h,)
    pos_w = torch.arange(w, dtype=torch.float32) / (w / base_size) / pe_interpolation  # (w,)
    grid_h = pos_h[:, None].expand(h, w).reshape(-1)  # (h*w,) row-major, like the patch tokens
    grid_w = pos_w[None, :].expand(h, w).reshape(-1)  # (h*w,)
    # First half of the channels encodes the w coordinate, second half h (numpy meshgrid order).
    emb = torch.cat([sincos_1d(dim // 2, grid_w), sincos_1d(dim // 2, grid_h)], dim=1)  # (h*w, dim)
    return emb.float()


def sincos_2d_pos_embed(dim: int, h: int, w: int, base_size: int, pe_interpolation: float) -> Tensor:
    """Fixed 2-D sin-cos positional embedding of an (h, w) token grid: (h*w, dim), float32.

    Args:
        dim: embedding width (must be divisible by 4).
        h, w: token-grid size (latent size / patch size).
        base_size: the grid side the model was designed for (`sample_size // patch_size`).
        pe_interpolation: PixArt's "lewei scale", native image side / 512.
    """
    if dim % 4:
        raise ValueError(f"positional embedding width {dim} must be divisible by 4")
    return _sincos_2d_cached(dim, h, w, base_size, float(pe_interpolation))


# ---- patches -------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens, row-major over the (h, w) patch grid."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # (B, D, h, w)
        # token-major memory: otherwise the residual stream keeps the conv's channel-major strides through every
        # block, and each LayerNorm and linear on it pays for a strided read or a copy
        return x.flatten(2).transpose(1, 2).contiguous()  # (B, h*w, D)


# ---- timesteps and micro-conditions ----------------------------------------------------------------------------


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: (N,) -> (N, dim), `cat[cos, sin]` (GLIDE)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedder(nn.Module):
    """Scalar -> 256-d sinusoid -> MLP. Also used, per scalar, for α's resolution/aspect-ratio conditions."""

    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: Tensor) -> Tensor:
        freq = timestep_embedding(t, self.frequency_size).to(self.mlp[0].weight.dtype)  # (N, 256)
        return self.mlp(freq)  # (N, D)


class SizeEmbedder(TimestepEmbedder):
    """Embeds each of k scalars per sample and concatenates them: (B, k) -> (B, k * D)."""

    def forward(self, s: Tensor) -> Tensor:  # type: ignore[override]
        b, k = s.shape
        emb = super().forward(s.reshape(b * k))  # (B*k, D)
        return emb.reshape(b, -1)  # (B, k*D)


# ---- captions ----------------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    """Linear -> GELU(tanh) -> Linear, with timm's `fc1`/`fc2` names."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CaptionEmbedder(nn.Module):
    """Projects T5 features to the model width; holds the null caption used for caption dropout.

    `y_embedding` is a buffer, not a parameter: the official code saves it in checkpoints but never trains it
    (loaders overwrite it with T5("")). Dropout replaces a whole caption by it and leaves the mask unchanged,
    as the reference does.
    """

    def __init__(self, caption_channels: int, hidden_size: int, max_tokens: int):
        super().__init__()
        self.y_proj = Mlp(caption_channels, hidden_size, hidden_size)
        self.register_buffer("y_embedding", torch.randn(max_tokens, caption_channels) / caption_channels**0.5)

    def null_caption(self, length: int) -> Tensor:
        """The null caption at `length` tokens: (length, C_text); rows past `max_tokens` repeat the last one."""
        rows = self.y_embedding.shape[0]
        if length <= rows:
            return self.y_embedding[:length]
        return torch.cat([self.y_embedding, self.y_embedding[-1:].expand(length - rows, -1)])

    def forward(self, caption: Tensor, drop: Tensor | None = None) -> Tensor:
        """caption (B, L, C_text), drop (B,) bool or None -> (B, L, D).

        Dropout swaps rows after `fc1`, not before: fc1 is linear per token, so the result is the same, but
        autograd then keeps the caption itself for fc1's backward instead of a swapped (B, L, C_text) copy
        (C_text is 4096 for T5-XXL, the largest activation of the embedder).
        """
        mlp = self.y_proj
        h = mlp.fc1(caption)  # (B, L, H)
        if drop is not None:
            null = mlp.fc1(self.null_caption(caption.shape[1]).to(caption.dtype))  # (L, H)
            h = torch.where(drop[:, None, None], null[None], h)  # (B, L, H)
        return mlp.fc2(mlp.act(h))  # (B, L, D)
