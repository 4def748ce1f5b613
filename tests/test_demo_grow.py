"""Deepening a trained transformer (pixart.demo.grow): same outputs, more blocks, and the new ones can learn."""

import pytest
import torch

from pixart.demo.grow import grow, layout
from pixart.model import PixArtSigma
from tests.conftest import randomize, tiny_config


def _inputs(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.in_channels, 8, 8, generator=g)
    caption = torch.randn(2, cfg.max_tokens, cfg.caption_channels, generator=g)
    mask = torch.tensor([[1] * 5 + [0] * 3, [1] * 8])
    return x, torch.tensor([10, 900]), caption, mask


def _model(**changes):
    return randomize(PixArtSigma(tiny_config(depth=4, **changes)), seed=1).eval()


def test_layout_puts_a_new_block_after_each_named_one():
    assert layout(4, [0, 2]) == [0, None, 1, 2, None, 3]
    assert layout(2, []) == [0, 1]


@pytest.mark.parametrize("after", [[4], [-1], [1, 1]])
def test_layout_rejects_bad_indices(after):
    with pytest.raises(ValueError, match="insert-after"):
        layout(4, after)


def test_grown_model_computes_what_the_small_one_did():
    model = _model()
    grown = grow(model, [0, 2])
    assert grown.cfg.depth == 6
    assert grown.num_parameters() > model.num_parameters()
    with torch.no_grad():
        expected, got = model(*_inputs(model.cfg)), grown(*_inputs(model.cfg))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # The old blocks moved, unchanged: old block 2 is new block 3.
    torch.testing.assert_close(grown.blocks[3].mlp.fc1.weight, model.blocks[2].mlp.fc1.weight)


def test_new_blocks_are_not_the_identity_by_accident():
    """The identity comes from the zeroed output projections only: undo them and the output changes."""
    model = _model()
    grown = grow(model, [1])
    with torch.no_grad():
        torch.nn.init.normal_(grown.blocks[2].mlp.fc2.weight, std=0.1)
        assert not torch.allclose(grown(*_inputs(model.cfg)), model(*_inputs(model.cfg)), atol=1e-4)


def test_kv_compression_covers_new_blocks_inside_the_compressed_run():
    model = _model()
    model.enable_kv_compression([2, 3], 2, "conv")
    randomize(model, seed=2)
    grown = grow(model, [1, 2])  # new block after 1 (not compressed), after 2 (compressed)
    # order: 0, 1, new, 2, new, 3
    assert grown.cfg.kv_compress_layers == (3, 4, 5)
    assert hasattr(grown.blocks[4].attn, "sr") and not hasattr(grown.blocks[2].attn, "sr")
    with torch.no_grad():
        torch.testing.assert_close(grown(*_inputs(model.cfg)), model(*_inputs(model.cfg)), rtol=0, atol=1e-6)


def test_new_blocks_learn_from_the_first_step():
    model = _model()
    grown = grow(model, [0]).train()
    out = grown(*_inputs(model.cfg))
    out.square().mean().backward()
    for name in ("attn.proj", "cross_attn.proj", "mlp.fc2"):
        layer = grown.blocks[1].get_submodule(name)
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0, name


def test_cli_writes_a_loadable_deeper_checkpoint(tmp_path):
    from pixart.checkpoint import load_transformer, save_transformer
    from pixart.demo.grow import main

    src, dst = tmp_path / "small.safetensors", tmp_path / "deep.safetensors"
    save_transformer(_model(), src)
    assert main([str(src), str(dst), "--insert-after", "1,3"]) == 0
    assert load_transformer(dst).cfg.depth == 6
    with pytest.raises(SystemExit):
        main([str(src), str(tmp_path / "bad.safetensors"), "--insert-after", "9"])
    assert not (tmp_path / "bad.safetensors").exists()
