"""LoRA adapters: peft injection on our module names, save/load, and a peft-free merge that matches peft."""

from __future__ import annotations

import pytest
import torch

from pixart.model import PixArtSigma
from pixart.train.lora import add_lora, load_lora, lora_state_dict, merge_lora, save_lora
from tests.conftest import randomize, tiny_config


def _inputs(gen):
    return torch.randn(2, 4, 8, 12, generator=gen), torch.tensor([10, 600]), torch.randn(2, 5, 16, generator=gen)


def _with_random_adapters(seed=0):
    model = randomize(PixArtSigma(tiny_config()), seed=seed).eval()
    add_lora(model, rank=4, alpha=8)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at zero; make the adapters do something
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def test_only_adapters_train_and_targets_are_found():
    model = _with_random_adapters()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    wrapped = {n.rsplit(".lora_A", 1)[0] for n in trainable if ".lora_A." in n}
    for expected in [
        "blocks.0.attn.qkv",
        "blocks.1.attn.proj",
        "blocks.0.cross_attn.q_linear",
        "blocks.0.cross_attn.kv_linear",
        "blocks.1.mlp.fc2",
        "final_layer.linear",
        "t_block.1",
        "t_embedder.mlp.0",
        "x_embedder.proj",
    ]:
        assert expected in wrapped, expected


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_merge_matches_peft_forward(scale, tmp_path, seeded):
    adapted = _with_random_adapters()
    path = tmp_path / "lora.safetensors"
    save_lora(adapted, path)
    tensors, meta = load_lora(path)
    assert meta == {"rank": 4, "alpha": 8.0, "targets": list(meta["targets"])}
    assert tensors.keys() == lora_state_dict(adapted).keys()

    plain = randomize(PixArtSigma(tiny_config()), seed=0).eval()
    merged_layers = merge_lora(plain, tensors, meta, scale=scale)
    assert merged_layers == len(tensors) // 2
    x, t, c = _inputs(seeded)
    with torch.no_grad():
        if scale == 1.0:
            expected = adapted(x, t, c)
        else:  # scale s is the same as B scaled by s
            for name, p in adapted.named_parameters():
                if "lora_B" in name:
                    p.mul_(scale)
            expected = adapted(x, t, c)
        torch.testing.assert_close(plain(x, t, c), expected, atol=1e-5, rtol=1e-5)


def test_bad_lora_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_lora(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable LoRA"):
        load_lora(junk)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        save_lora(PixArtSigma(tiny_config()), tmp_path / "x.safetensors")
    other = PixArtSigma(tiny_config(hidden_size=24, num_heads=2))
    tensors, meta = lora_state_dict(_with_random_adapters()), {"rank": 4, "alpha": 8.0}
    with pytest.raises(ValueError, match="update .* vs weight"):
        merge_lora(other, tensors, meta)
