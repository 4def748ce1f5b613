"""KV token compression, checked against direct computations written independently here (loops, no SDPA)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pixart.config import KV_SAMPLINGS
from pixart.model import PixArtSigma
from pixart.model.attention import SelfAttention, compress_tokens
from tests.conftest import randomize, tiny_config

# ---- an independent reference ------------------------------------------------------------------------------------


def _keep_grid(h: int, w: int, s: int, sampling: str) -> list[list[tuple[int, int]]]:
    """For each compressed token, the list of (row, col) source tokens it is made of (clamped at the edges)."""
    if sampling == "uniform_every":
        return [[divmod(n, w)] for n in range(0, h * w, s)]
    rows, cols = math.ceil(h / s), math.ceil(w / s)
    groups = []
    for i in range(rows):
        for j in range(cols):
            if sampling == "conv":  # an s x s window; rows/cols past the edge repeat the last one
                groups.append([(min(i * s + a, h - 1), min(j * s + b, w - 1)) for a in range(s) for b in range(s)])
            else:  # ave (nearest) and uniform: the window's top-left token
                groups.append([(i * s, j * s)])
    return groups


def reference_self_attention(attn: SelfAttention, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Self-attention with compressed K/V computed token by token, for one sample x (N, D)."""
    h, w = grid
    n, d = x.shape
    heads, s = attn.num_heads, attn.kv_factor
    wq, wk, wv = attn.qkv.weight.split(d)
    bq, bk, bv = attn.qkv.bias.split(d)
    q, k, v = x @ wq.T + bq, x @ wk.T + bk, x @ wv.T + bv
    if s > 1:
        groups = _keep_grid(h, w, s, attn.kv_sampling)
        if attn.kv_sampling == "conv":
            kernel = attn.sr.weight[:, 0]  # (D, s, s)

            def reduce(t):
                rows = []
                for group in groups:
                    acc = attn.sr.bias.clone()
                    for idx, (r, c) in enumerate(group):
                        acc = acc + kernel[:, idx // s, idx % s] * t[r * w + c]
                    rows.append(acc)
                return F.layer_norm(torch.stack(rows), (d,), attn.norm.weight, attn.norm.bias, attn.norm.eps)
        else:

            def reduce(t):
                return torch.stack([t[g[0][0] * w + g[0][1]] for g in groups])

        k, v = reduce(k), reduce(v)
    hd = d // heads
    outs = []
    for head in range(heads):
        sl = slice(head * hd, (head + 1) * hd)
        scores = q[:, sl] @ k[:, sl].T / math.sqrt(hd)
        outs.append(torch.softmax(scores, dim=-1) @ v[:, sl])
    return torch.cat(outs, dim=1) @ attn.proj.weight.T + attn.proj.bias


# ---- tests ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampling", KV_SAMPLINGS)
@pytest.mark.parametrize("grid", [(4, 6), (5, 7), (1, 9), (3, 2)])
def test_every_sampling_matches_the_direct_computation(sampling, grid, seeded):
    attn = randomize(SelfAttention(12, 3, kv_factor=2, kv_sampling=sampling), seed=3)
    x = torch.randn(2, grid[0] * grid[1], 12, generator=seeded)
    with torch.no_grad():
        out = attn(x, grid)
        for b in range(2):
            torch.testing.assert_close(out[b], reference_self_attention(attn, x[b], grid), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("factor", [2, 3])
def test_average_init_conv_is_average_pooling(factor, seeded):
    attn = SelfAttention(8, 2, kv_factor=factor, kv_sampling="conv")
    tokens = torch.randn(2, 6 * 12, 8, generator=seeded)
    pooled = F.avg_pool2d(tokens.reshape(2, 6, 12, 8).permute(0, 3, 1, 2), factor)  # (B, C, h', w')
    expected = F.layer_norm(pooled.flatten(2).transpose(1, 2), (8,))  # fresh LayerNorm = identity affine
    got = compress_tokens(tokens, (6, 12), factor, "conv", attn.sr, attn.norm)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_divisible_grids_match_the_reference_definitions(seeded):
    """On divisible grids our modes are exactly the reference's: strided conv, F.interpolate nearest, slicing."""
    tokens = torch.randn(1, 4 * 6, 5, generator=seeded)
    grid_t = tokens.reshape(1, 4, 6, 5).permute(0, 3, 1, 2)
    nearest = F.interpolate(grid_t, scale_factor=0.5, mode="nearest").flatten(2).transpose(1, 2)
    torch.testing.assert_close(compress_tokens(tokens, (4, 6), 2, "ave"), nearest, atol=0, rtol=0)
    strided = grid_t[:, :, ::2, ::2].flatten(2).transpose(1, 2)
    torch.testing.assert_close(compress_tokens(tokens, (4, 6), 2, "uniform"), strided, atol=0, rtol=0)
    torch.testing.assert_close(compress_tokens(tokens, (4, 6), 2, "uniform_every"), tokens[:, ::2], atol=0, rtol=0)


def test_factor_one_equals_no_compression(seeded):
    model = randomize(PixArtSigma(tiny_config())).eval()
    x = torch.randn(1, 4, 8, 8, generator=seeded)
    caption = torch.randn(1, 5, 16, generator=seeded)
    with torch.no_grad():
        before = model(x, torch.tensor([7]), caption)
        model.enable_kv_compression([0, 1], factor=1)
        after = model(x, torch.tensor([7]), caption)
    torch.testing.assert_close(before, after, atol=0, rtol=0)
    assert not any(".attn.sr." in k for k in model.state_dict())


def test_enable_kv_compression_adds_average_convs_and_changes_nothing_else():
    model = randomize(PixArtSigma(tiny_config(depth=3))).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.enable_kv_compression([1, 2], factor=2)
    after = model.state_dict()
    added = sorted(set(after) - set(before))
    assert added == [f"blocks.{i}.attn.{m}.{p}" for i in (1, 2) for m in ("norm", "sr") for p in ("bias", "weight")]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.all(after["blocks.1.attn.sr.weight"] == 0.25) and torch.all(after["blocks.1.attn.sr.bias"] == 0)
    assert model.cfg.kv_compress_layers == (1, 2) and model.cfg.kv_factor(0) == 1 and model.cfg.kv_factor(2) == 2
    assert model.num_parameters() == PixArtSigma(tiny_config(depth=3)).num_parameters() + 2 * 7 * 48
    # A trained conv survives a second call with the same factor; switching off removes it.
    with torch.no_grad():
        model.blocks[1].attn.sr.weight.fill_(0.5)
    model.enable_kv_compression([1], factor=2)
    assert torch.all(model.blocks[1].attn.sr.weight == 0.5) and not hasattr(model.blocks[2].attn, "sr")
    model.enable_kv_compression([])
    assert model.cfg.kv_compress_layers == () and not hasattr(model.blocks[1].attn, "sr")


def test_kv_model_built_from_config_equals_switched_on_model(seeded):
    switched = randomize(PixArtSigma(tiny_config()), seed=4)
    switched.enable_kv_compression([1], 2)
    fresh = PixArtSigma(tiny_config(kv_compress_layers=(1,), kv_compress_factor=2))
    fresh.load_state_dict(switched.state_dict())  # strict: same keys and shapes
    assert fresh.cfg == switched.cfg
    x = torch.randn(1, 4, 10, 6, generator=seeded)
    caption = torch.randn(1, 3, 16, generator=seeded)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x, 1, caption), switched.eval()(x, 1, caption))


@pytest.mark.parametrize("hw", [(2, 64), (64, 2), (10, 14), (2, 2)])
def test_odd_and_extreme_token_grids_run_in_every_mode(hw, seeded):
    for sampling in KV_SAMPLINGS:
        model = randomize(
            PixArtSigma(tiny_config(kv_compress_layers=(0, 1), kv_compress_factor=2, kv_compress_sampling=sampling))
        ).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 4, *hw, generator=seeded), torch.tensor([3]), torch.randn(1, 4, 16))
        assert out.shape == (1, 8, *hw) and torch.isfinite(out).all()
