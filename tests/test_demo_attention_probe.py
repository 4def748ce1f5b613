"""The attention probe: the recorded cross-attention is the layer's own, and own/other on exact cases."""

from __future__ import annotations

import pytest
import torch

from pixart.demo.attention_probe import (
    box_cells,
    cross_attention_recorder,
    main,
    name_logit_gaps,
    name_span,
    own_and_other,
)
from pixart.model import PixArtSigma
from tests.conftest import randomize, tiny_config


def test_name_span_finds_the_first_occurrence_and_refuses_a_missing_name():
    tokens = ["▁a", "▁red", "▁apple", "▁next", "▁to", "▁a", "▁cat"]
    assert name_span(tokens, ["▁red", "▁apple"]) == [1, 2]
    assert name_span(tokens, ["▁a"]) == [0]
    with pytest.raises(ValueError, match="not in the caption"):
        name_span(tokens, ["▁dog"])
    with pytest.raises(ValueError):
        name_span(tokens, [])


def test_box_cells_cover_the_cells_a_box_touches():
    cells = box_cells((0, 96, 77, 173), (16, 16), 16).reshape(16, 16)
    assert cells[6:11, 0:5].all() and int(cells.sum()) == 25
    assert int(box_cells((-5, -5, 10, 10), (4, 4), 16).sum()) == 1  # clipped at the image's edge


def test_recorded_maps_are_the_attention_the_layer_applies_and_the_hooks_go():
    """Applying each recorded map to the layer's values and output projection reproduces the layer's output
    exactly; padded tokens get no weight; every map is a distribution over the caption's tokens."""
    model = randomize(PixArtSigma(tiny_config())).eval()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([300, 800])
    caption = torch.randn(2, 8, 16, generator=g)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    outputs = []
    handles = [b.cross_attn.register_forward_hook(lambda m, a, o: outputs.append((a, o))) for b in model.blocks]
    with torch.no_grad(), cross_attention_recorder(model) as logits:
        model(x, t, caption, mask)
    maps = [lg.softmax(-1) for lg in logits]
    for h in handles:
        h.remove()
    assert len(maps) == len(model.blocks) == len(outputs)
    assert all(len(b.cross_attn._forward_hooks) == 0 for b in model.blocks)  # the recorder removed its own
    for att, block, ((_, cond, _), out) in zip(maps, model.blocks, outputs, strict=True):
        layer = block.cross_attn
        assert torch.allclose(att.sum(-1), torch.ones(att.shape[:-1]))
        assert float(att[1, ..., 5:].abs().max()) == 0.0
        v = torch.nn.functional.linear(cond, layer.kv_linear.weight.chunk(2)[1], layer.kv_linear.bias.chunk(2)[1])
        v = v.reshape(2, 8, layer.num_heads, -1).transpose(1, 2)  # (B, H, L, d)
        mixed = (att @ v).transpose(1, 2).reshape(2, att.shape[2], -1)  # (B, N, D)
        assert torch.allclose(layer.proj(mixed), out, atol=1e-5)


def test_own_and_other_on_uniform_and_on_bound_attention():
    """Uniform attention over 4 tokens: 1/4 on each one-token name inside any box (own = other). A map that sends
    each box's cells to its own name: own 1, other 0."""
    n, spans = 4, [[[1], [3]]]
    cells = [[torch.tensor([True, True, False, False]), torch.tensor([False, False, True, True])]]
    uniform = torch.full((1, 2, n, 4), 0.25)  # (B, H, N, L)
    table = own_and_other([uniform], spans, cells)
    assert table.shape == (1, 2, 2) and torch.allclose(table, torch.full((1, 2, 2), 0.25))
    bound = torch.zeros(1, 2, n, 4)
    bound[0, :, :2, 1] = 1.0
    bound[0, :, 2:, 3] = 1.0
    assert torch.equal(own_and_other([bound], spans, cells)[0], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_name_logit_gaps_tell_identity_preference_from_binding():
    """Logits +3 on name 0 everywhere (a head choosing by identity): gap 3, no box dependence. Logits +3 on each
    box's own name (a binding head): g_0 = +3, g_1 = -3, so no shared gap and a box dependence of 6."""
    spans = [[[0], [1]]]
    cells = [[torch.tensor([True, False]), torch.tensor([False, True])]]
    identity = torch.zeros(1, 1, 2, 3)
    identity[..., 0] = 3.0
    assert torch.allclose(name_logit_gaps([identity], spans, cells)[0, 0], torch.tensor([3.0, 0.0]))
    binding = torch.zeros(1, 1, 2, 3)
    binding[0, 0, 0, 0] = binding[0, 0, 1, 1] = 3.0
    assert torch.allclose(name_logit_gaps([binding], spans, cells)[0, 0], torch.tensor([0.0, 6.0]))


def test_the_command_on_a_saved_run(tmp_path, capsys):
    """End to end on the run's own tiny T5 and VAE: one row per block and head, each with own/other in [0, 1]."""
    import csv
    import json

    from test_train import save_text_encoder_and_vae

    from pixart.checkpoint import save_transformer

    t5, vae = save_text_encoder_and_vae(tmp_path / "encoders", width=16)
    run = tmp_path / "run"
    cfg = tiny_config(sample_size=32, max_tokens=64)
    save_transformer(randomize(PixArtSigma(cfg)).eval(), run / "final.safetensors")
    (run / "config.json").write_text(json.dumps({"data": {"text_encoder": str(t5), "vae": str(vae)}}))
    out = tmp_path / "attention.csv"
    assert main([str(run / "final.safetensors"), "-n", "2", "-t", "500", "--csv", str(out)]) == 0
    assert "block 1:" in capsys.readouterr().out
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == cfg.depth * cfg.num_heads
    assert all(0 <= float(r["own"]) <= 1 and 0 <= float(r["other"]) <= 1 for r in rows)
    assert all(float(r["name_gap"]) >= 0 for r in rows)
    with pytest.raises(SystemExit):
        main([str(run / "final.safetensors"), "-t", "1000"])
