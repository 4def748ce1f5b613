"""Our transformer against diffusers' PixArtTransformer2DModel holding the same weights (through our converter)."""

from __future__ import annotations

import pytest
import torch

from pixart.model import PixArtSigma
from tests.conftest import make_diffusers_reference, randomize, tiny_config


def _reference_out(ref, x, t, caption, mask, micro=None):
    added = {"resolution": None, "aspect_ratio": None} if micro is None else micro
    with torch.no_grad():
        return ref(
            x,
            encoder_hidden_states=caption,
            encoder_attention_mask=mask,
            timestep=t,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]


def _assert_close(ours, theirs, rel=1e-5):
    scale = theirs.abs().max().item()
    err = (ours - theirs).abs().max().item()
    assert err <= rel * max(scale, 1.0), f"max abs diff {err:.3g} vs output scale {scale:.3g}"


def _inputs(cfg, b, h, w, lengths, gen):
    x = torch.randn(b, cfg.in_channels, h, w, generator=gen)
    t = torch.tensor([999.0, 1.0, 500.0, 37.5][:b])
    caption = torch.randn(b, max(lengths), cfg.caption_channels, generator=gen)
    mask = torch.zeros(b, max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return x, t, caption, mask


@pytest.mark.parametrize("hw", [(8, 8), (8, 12), (16, 6)])
def test_tiny_matches_diffusers(hw, seeded):
    cfg = tiny_config()
    model = randomize(PixArtSigma(cfg)).eval()
    ref = make_diffusers_reference(model, cfg)
    x, t, caption, mask = _inputs(cfg, 3, *hw, lengths=[8, 3, 5], gen=seeded)
    with torch.no_grad():
        ours = model(x, t, caption, mask)
    assert ours.shape == (3, cfg.out_channels, *hw)
    _assert_close(ours, _reference_out(ref, x, t, caption, mask))


def test_micro_conditions_match_diffusers(seeded):
    cfg = tiny_config(micro_condition=True, sample_size=16)
    model = randomize(PixArtSigma(cfg)).eval()
    ref = make_diffusers_reference(model, cfg)
    x, t, caption, mask = _inputs(cfg, 2, 16, 8, lengths=[8, 2], gen=seeded)
    resolution = torch.tensor([[128.0, 64.0], [96.0, 48.0]])
    aspect = torch.tensor([[2.0], [2.0]])
    with torch.no_grad():
        ours = model(x, t[:2], caption, mask, resolution=resolution, aspect_ratio=aspect)
    theirs = _reference_out(ref, x, t[:2], caption, mask, {"resolution": resolution, "aspect_ratio": aspect})
    _assert_close(ours, theirs)


@pytest.mark.parametrize("pe_interpolation,sample_size", [(0.5, 32), (2.0, 128)])
def test_full_width_depth1_matches_diffusers(pe_interpolation, sample_size, seeded):
    """The released width (1152 = 16 heads x 72, 4096-d captions), one block, non-square latents."""
    cfg = tiny_config(
        depth=1,
        hidden_size=1152,
        num_heads=16,
        caption_channels=4096,
        max_tokens=300,
        sample_size=sample_size,
        pe_interpolation=pe_interpolation,
    )
    torch.manual_seed(0)
    model = randomize(PixArtSigma(cfg)).eval()
    ref = make_diffusers_reference(model, cfg)
    x, t, caption, mask = _inputs(cfg, 2, 16, 24, lengths=[12, 5], gen=seeded)
    with torch.no_grad():
        ours = model(x, t[:2], caption, mask)
    _assert_close(ours, _reference_out(ref, x, t[:2], caption, mask))
