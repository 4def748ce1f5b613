"""Self-attention with KV token compression, and cross-attention to caption tokens with a padding mask.

Both use `F.scaled_dot_product_attention`, which picks a memory-efficient kernel where the device has one;
nothing here builds the N x N attention matrix explicitly.

KV compression (PixArt-Σ §3.3): keys and values of the image tokens are downsampled on their 2-D grid by a
factor `s` per side before attention, so attention costs N * N / s² instead of N²; queries are never
compressed, so the output keeps N tokens. Samplings, with the reference's semantics (REFERENCE.md §1.4):
  - conv: depthwise s x s conv with stride s (initialised to an s x s average), then LayerNorm; one conv and
    norm shared by K and V.
  - ave: nearest-neighbour downsampling (the reference calls it "ave" but uses `mode='nearest'`), i.e. the
    top-left token of every s x s window.
  - uniform: every s-th row and column of the grid.
  - uniform_every: every s-th token of the flattened sequence (s x fewer tokens, not s²).
Grids that are not divisible by s: the reference drops the remainder rows/columns (and fails when a side is
shorter than s). We keep them instead: conv and ave first pad the grid by repeating its last row/column up
to a multiple of s, so every token is seen and the compressed grid is ceil(h/s) x ceil(w/s) in every 2-D
mode. On divisible grids this is identical to the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from pixart.config import KV_SAMPLINGS

# ---- token compression ------------------------------------------------------------------------------------------


def pad_grid_to_multiple(x: Tensor, factor: int) -> Tensor:
    """Replicate-pad a (B, C, h, w) grid at the bottom/right so both sides divide by `factor`."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % factor, -w % factor
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def compress_tokens(
    x: Tensor,
    grid: tuple[int, int],
    factor: int,
    sampling: str,
    conv: nn.Conv2d | None = None,
    norm: nn.LayerNorm | None = None,
) -> Tensor:
    """Downsample image tokens on their grid: (B, h*w, C) -> (B, N', C). See the module docstring."""
    if factor == 1:
        return x
    if sampling not in KV_SAMPLINGS:
        raise ValueError(f"unknown KV sampling {sampling!r}; allowed: {', '.join(KV_SAMPLINGS)}")
    if sampling == "uniform_every":
        return x[:, ::factor]  # (B, ceil(N/s), C)
    h, w = grid
    x = rearrange(x, "b (h w) c -> b c h w", h=h, w=w)  # (B, C, h, w)
    if sampling == "uniform":
        x = x[:, :, ::factor, ::factor]  # (B, C, ceil(h/s), ceil(w/s))
    elif sampling == "ave":
        x = F.interpolate(pad_grid_to_multiple(x, factor), scale_factor=1 / factor, mode="nearest")
    else:  # conv
        if conv is None or norm is None:
            raise ValueError("conv KV sampling needs the block's `sr` conv and `norm` layers")
        x = conv(pad_grid_to_multiple(x, factor))  # (B, C, ceil(h/s), ceil(w/s))
    x = rearrange(x, "b c h w -> b (h w) c")  # (B, N', C)
    return norm(x) if sampling == "conv" else x


# ---- attention layers ----------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head self-attention over image tokens, optionally with compressed keys/values.

    Parameter names match the official `AttentionKVCompress`: fused `qkv`, `proj`, and for conv compression
    `sr` (depthwise conv) + `norm`.
    """

    def __init__(self, dim: int, num_heads: int, kv_factor: int = 1, kv_sampling: str = "conv"):
        super().__init__()
        self.num_heads = num_heads
        self.kv_factor = kv_factor
        self.kv_sampling = kv_sampling
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        if kv_factor > 1 and kv_sampling == "conv":
            self.sr = nn.Conv2d(dim, dim, kernel_size=kv_factor, stride=kv_factor, groups=dim)
            self.norm = nn.LayerNorm(dim)
            init_kv_conv_as_average(self.sr)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """x (B, N, D) on an (h, w) token grid -> (B, N, D)."""
        if type(self.qkv) is nn.Linear:
            # The fused weight applied in three row blocks: each of q, k, v comes out contiguous, which SDPA and
            # the KV compression read faster than strided slices of one (B, N, 3D) output (measured on CPU).
            weights, biases = self.qkv.weight.chunk(3), self.qkv.bias.chunk(3)
            q, k, v = (F.linear(x, w, b) for w, b in zip(weights, biases, strict=True))  # 3 x (B, N, D)
        else:  # a wrapped layer (a peft LoRA adapter): its own forward must run
            q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, N, D)
        if self.kv_factor > 1:
            conv, norm = getattr(self, "sr", None), getattr(self, "norm", None)
            k = compress_tokens(k, grid, self.kv_factor, self.kv_sampling, conv, norm)  # (B, N', D)
            v = compress_tokens(v, grid, self.kv_factor, self.kv_sampling, conv, norm)  # (B, N', D)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.num_heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, d)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, D)


def init_kv_conv_as_average(conv: nn.Conv2d) -> None:
    """Start a KV-compression conv as s x s average pooling ("Avg Conv Init", PixArt-Σ §3.3)."""
    with torch.no_grad():
        conv.weight.fill_(1.0 / (conv.kernel_size[0] * conv.kernel_size[1]))
        conv.bias.zero_()


def trim_caption_padding(caption: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop the trailing caption columns that are padding in every row: caption (B, L, D), mask (B, L) -> (B, L', ...).

    Masked keys get zero attention weight, so the model's output does not change; the caption projection and
    the k/v projections then skip the padding (T5 pads every prompt to 300 tokens, the demo to 120, while most
    captions are far shorter). The reference gets the same saving by packing the batch's captions. Keeps at
    least one column, so an all-padding batch still has a shape.
    """
    real = mask.bool().any(dim=0)  # (L,)
    length = int(real.nonzero().max()) + 1 if bool(real.any()) else 1
    return caption[:, :length], mask[:, :length]


class CrossAttention(nn.Module):
    """Image tokens attend to caption tokens; padded caption tokens are masked out.

    The reference packs the batch's captions into one variable-length sequence (xformers); a boolean key
    mask gives the same result with plain SDPA and no packing. A caption with no valid token at all
    contributes nothing (this layer returns zeros for that sample) instead of the NaN a fully masked softmax
    gives.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, cond: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, N, D), cond (B, L, D), mask (B, L) bool (True = real token) or None -> (B, N, D)."""
        q = rearrange(self.q_linear(x), "b n (h d) -> b h n d", h=self.num_heads)  # (B, H, N, d)
        if type(self.kv_linear) is nn.Linear:  # row blocks of the fused weight: contiguous k and v (see SelfAttention)
            weights, biases = self.kv_linear.weight.chunk(2), self.kv_linear.bias.chunk(2)
            k, v = (F.linear(cond, w, b) for w, b in zip(weights, biases, strict=True))  # 2 x (B, L, D)
        else:  # a wrapped layer (a peft LoRA adapter): its own forward must run
            k, v = self.kv_linear(cond).chunk(2, dim=-1)  # 2 x (B, L, D)
        k, v = (rearrange(t, "b l (h d) -> b h l d", h=self.num_heads) for t in (k, v))  # (B, H, L, d)
        attn_mask = None
        has_tokens = None
        if mask is not None:
            has_tokens = mask.any(dim=1)  # (B,)
            # A fully padded row would softmax over nothing; let it see everything, then zero its output.
            attn_mask = (mask | ~has_tokens[:, None])[:, None, None, :]  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, N, d)
        out = self.proj(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, D)
        if has_tokens is not None:  # where, not a multiply: autograd then keeps only the (B,) flags, not `out`
            out = torch.where(has_tokens[:, None, None], out, 0.0)
        return out
