"""The transformer on its own: shapes, invariances, masks, caption dropout, positional embedding, presets."""

from __future__ import annotations

import copy

import pytest
import torch

from pixart.config import PRESETS, ModelConfig, get_preset
from pixart.model import PixArtSigma
from pixart.model.attention import trim_caption_padding
from pixart.model.embeddings import sincos_2d_pos_embed
from tests.conftest import randomize, tiny_config


def _caption(cfg, b, length, gen):
    return torch.randn(b, length, cfg.caption_channels, generator=gen)


@pytest.fixture
def model():
    return randomize(PixArtSigma(tiny_config())).eval()


def test_output_shape_any_aspect(model, seeded):
    cfg = model.cfg
    for h, w in [(8, 8), (4, 32), (30, 2), (10, 14)]:
        x = torch.randn(2, 4, h, w, generator=seeded)
        out = model(x, torch.tensor([10, 900]), _caption(cfg, 2, 5, seeded))
        assert out.shape == (2, 8, h, w)
        assert torch.isfinite(out).all()


def test_latent_not_multiple_of_patch_is_an_error(model, seeded):
    with pytest.raises(ValueError, match="7x8.*patch size 2"):
        model(torch.randn(1, 4, 7, 8), torch.tensor([1]), _caption(model.cfg, 1, 3, seeded))


def test_batch_equals_singles_and_padding_is_ignored(model, seeded):
    """Each sample alone, with its caption cut to its own length, equals its row of a padded batch."""
    cfg = model.cfg
    lengths = [8, 3, 1]
    x = torch.randn(3, 4, 8, 12, generator=seeded)
    t = torch.tensor([999.0, 3.0, 500.5])
    caption = _caption(cfg, 3, 8, seeded)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    with torch.no_grad():
        batch = model(x, t, caption, mask)
        for i, n in enumerate(lengths):
            single = model(x[i : i + 1], t[i : i + 1], caption[i : i + 1, :n])
            torch.testing.assert_close(batch[i : i + 1], single, atol=1e-5, rtol=1e-5)
        # What sits under the mask does not matter.
        garbage = caption.clone()
        garbage[~mask] = 1e3
        torch.testing.assert_close(model(x, t, garbage, mask), batch, atol=0, rtol=0)


def test_trimming_shared_padding_changes_nothing(model, seeded):
    """`trim_caption_padding` cuts the columns that every row pads; the model's output stays the same."""
    x = torch.randn(3, 4, 8, 8, generator=seeded)
    t = torch.tensor([999.0, 3.0, 500.0])
    caption = _caption(model.cfg, 3, 10, seeded)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, :4], mask[1, :2], mask[2, :6] = True, True, True
    short, short_mask = trim_caption_padding(caption, mask)
    assert short.shape == (3, 6, model.cfg.caption_channels) and torch.equal(short_mask, mask[:, :6])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, short, short_mask), model(x, t, caption, mask), atol=1e-6, rtol=1e-6)
    none = torch.zeros(3, 10, dtype=torch.bool)
    assert trim_caption_padding(caption, none)[0].shape[1] == 1  # all padding: one column, still a shape


def test_all_padding_caption_contributes_nothing(model, seeded):
    cfg = model.cfg
    x = torch.randn(2, 4, 8, 8, generator=seeded)
    t = torch.tensor([10.0, 10.0])
    caption = _caption(cfg, 2, 6, seeded)
    mask = torch.tensor([[False] * 6, [True] * 6])
    no_cross = copy.deepcopy(model)
    for block in no_cross.blocks:
        torch.nn.init.zeros_(block.cross_attn.proj.weight)
        torch.nn.init.zeros_(block.cross_attn.proj.bias)
    with torch.no_grad():
        out = model(x, t, caption, mask)
        expected = no_cross(x[:1], t[:1], caption[:1])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:1], expected, atol=1e-6, rtol=1e-6)


def test_scalar_timestep_broadcasts(model, seeded):
    x = torch.randn(2, 4, 8, 8, generator=seeded)
    caption = _caption(model.cfg, 2, 4, seeded)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, torch.tensor(250.0), caption), model(x, torch.tensor([250.0] * 2), caption)
        )


def test_forward_does_not_mutate_state(model, seeded):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 4, 12, 6, generator=seeded)
    caption = _caption(model.cfg, 1, 4, seeded)
    model.train()
    out1 = model(x, torch.tensor([5]), caption, drop_caption=torch.tensor([False]))
    out2 = model(x, torch.tensor([5]), caption, drop_caption=torch.tensor([False]))
    torch.testing.assert_close(out1, out2, atol=0, rtol=0)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_caption_dropout_uses_the_null_caption_and_keeps_the_mask(model, seeded):
    cfg = model.cfg
    x = torch.randn(2, 4, 8, 8, generator=seeded)
    t = torch.tensor([100, 200])
    caption = _caption(cfg, 2, 8, seeded)
    mask = torch.tensor([[True] * 5 + [False] * 3, [True] * 8])
    null = model.y_embedder.y_embedding[None].expand(2, -1, -1)
    with torch.no_grad():
        dropped = model(x, t, caption, mask, drop_caption=torch.tensor([True, False]))
        expected0 = model(x[:1], t[:1], null[:1], mask[:1])
        expected1 = model(x[1:], t[1:], caption[1:], mask[1:])
    torch.testing.assert_close(dropped[:1], expected0)
    torch.testing.assert_close(dropped[1:], expected1)


def test_training_mode_drops_captions_at_the_configured_rate(seeded):
    model = randomize(PixArtSigma(tiny_config(class_dropout_prob=1.0))).train()
    x = torch.randn(1, 4, 8, 8, generator=seeded)
    caption = _caption(model.cfg, 1, 8, seeded)
    null = model.y_embedder.y_embedding[None]
    torch.testing.assert_close(model(x, torch.tensor([3]), caption), model(x, torch.tensor([3]), null))


def test_gradient_checkpointing_gives_the_same_gradients(seeded):
    cfg = tiny_config(class_dropout_prob=0.0)
    grads = []
    for checkpointing in (False, True):
        model = randomize(PixArtSigma(cfg)).train()
        model.set_gradient_checkpointing(checkpointing)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(2, 4, 8, 8, generator=gen)
        model(
            x, torch.tensor([1, 2]), torch.randn(2, 4, cfg.caption_channels, generator=gen)
        ).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_positional_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    for (h, w), base, pe in [((8, 8), 4, 1.0), ((64, 64), 64, 2.0), ((48, 84), 64, 2.0), ((240, 160), 128, 4.0)]:
        ours = sincos_2d_pos_embed(1152, h, w, base, pe)
        theirs = get_2d_sincos_pos_embed(1152, (h, w), base_size=base, interpolation_scale=pe, output_type="pt")
        assert ours.shape == (h * w, 1152)
        torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)


def test_positional_grid_spans_the_same_range_at_every_resolution():
    """Each axis covers [0, base_size / pe_interpolation) whatever the token count (REFERENCE.md §1.3)."""
    # The w coordinate of token (0, j) is encoded by channel pair (0, 288) of the first half: sin(pos), cos(pos)
    # with frequency 1, so pos = atan2(sin, cos) for pos < pi.
    for w in (16, 32, 64):
        emb = sincos_2d_pos_embed(1152, 1, w, base_size=2, pe_interpolation=1.0)
        pos = torch.atan2(emb[:, 0], emb[:, 288])
        torch.testing.assert_close(pos, torch.arange(w) * 2.0 / w, atol=1e-5, rtol=0)


def test_presets_and_parameter_count():
    with torch.device("meta"):
        model = PixArtSigma(get_preset("PixArt-Sigma-XL-2-1024-MS"))
    assert model.num_parameters() == 610_856_096
    with torch.device("meta"):
        kv = PixArtSigma(PRESETS["PixArt-Sigma-XL-2-2K-MS-KV"])
    assert kv.num_parameters() == 610_856_096 + 14 * 8_064
    assert PRESETS["PixArt-Sigma-XL-2-256x256"].pe_interpolation == 0.5
    assert PRESETS["PixArt-Sigma-XL-2-2K-MS"].base_size == 128
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        get_preset("nope")


def test_config_round_trips_and_validates():
    cfg = tiny_config(kv_compress_layers=(1,), kv_compress_factor=2)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="kv_compress_sampling='avg'"):
        tiny_config(kv_compress_sampling="avg")
    with pytest.raises(ValueError, match=r"kv_compress_layers \[5\] out of range"):
        tiny_config(kv_compress_layers=(5,), kv_compress_factor=2)
    with pytest.raises(ValueError, match="unknown model config keys \\['depthh'\\]"):
        ModelConfig.from_dict({"depthh": 3})
    with pytest.raises(ValueError, match="hidden_size=50 must be divisible by num_heads=3"):
        tiny_config(hidden_size=50)
    v = tiny_config(prediction="v")
    assert ModelConfig.from_json(v.to_json()) == v and v != tiny_config()
    with pytest.raises(ValueError, match="prediction='x0': allowed are epsilon, v"):
        tiny_config(prediction="x0")
