"""The PixArt block (adaLN-single modulation) and the final layer.

adaLN-single (PixArt-α §2.3): instead of DiT's per-block MLP from the timestep, one global MLP (`t_block`)
produces six modulation vectors shared by all blocks, and each block adds its own learned
`scale_shift_table` (6, D) to them. That cuts ~27% of DiT's parameters at the same depth and width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pixart.model.attention import CrossAttention, SelfAttention
from pixart.model.embeddings import Mlp


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """`x * (1 + scale) + shift` with (B, 1, D) shift/scale broadcast over tokens."""
    return x * (1 + scale) + shift


class PixArtBlock(nn.Module):
    """Self-attention, cross-attention to the caption, MLP; the first and last modulated and gated by t."""

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_ratio: float, kv_factor: int = 1, kv_sampling: str = "conv"
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(hidden_size, num_heads, kv_factor, kv_sampling)
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), hidden_size)
        self.scale_shift_table = nn.Parameter(torch.empty(6, hidden_size))  # initialised by the model

    def forward(self, x: Tensor, t0: Tensor, y: Tensor, y_mask: Tensor | None, grid: tuple[int, int]) -> Tensor:
        """x (B, N, D), t0 (B, 6*D) from `t_block`, y (B, L, D) caption tokens, y_mask (B, L) -> (B, N, D)."""
        b = x.shape[0]
        mods = self.scale_shift_table[None] + t0.reshape(b, 6, -1)  # (B, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods.chunk(6, dim=1)  # 6 x (B, 1, D)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), grid)  # (B, N, D)
        x = x + self.cross_attn(x, y, y_mask)  # no norm, no modulation, no gate (as the reference)
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (B, N, D)
        return x


class FinalLayer(nn.Module):
    """LayerNorm, modulated by the timestep embedding itself (not t_block's output), then a linear to patches."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.scale_shift_table = nn.Parameter(torch.empty(2, hidden_size))  # initialised by the model

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x (B, N, D), t (B, D) -> (B, N, p*p*C_out)."""
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)  # 2 x (B, 1, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, N, p*p*C_out)
