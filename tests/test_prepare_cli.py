"""`pixart prepare` end to end with a tiny T5 (random, from T5Config, with a freshly trained sentencepiece
vocabulary) and a tiny random AutoencoderKL, offline: encode, re-run, read back, refuse other encoders."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
import torch
from test_dataset import write_image

from pixart.commands import prepare
from pixart.data.cache_read import CachedDataset, read_index
from pixart.data.dataset import load_index
from pixart.data.sampler import STREAM_NOISE, sample_generator
from pixart.data.transforms import load_pixels

CORPUS = [
    "a photo of a cat",
    "a red apple on a blue table",
    "two dogs in the park at night",
    "the quick brown fox jumps over the lazy dog",
    "a long caption with many words about a small green frog",
]


def save_tokenizer(folder: Path) -> None:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 10), model_writer=model, vocab_size=60, hard_vocab_limit=False,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    (folder / "spiece.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))


def save_vae(folder: Path, scaling_factor: float = 0.13025):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
        sample_size=64, scaling_factor=scaling_factor,
    ).eval()  # fmt: skip
    vae.save_pretrained(folder)
    return vae


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    from transformers import T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("models")
    t5 = root / "t5"
    t5.mkdir()
    save_tokenizer(t5)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
    )  # fmt: skip
    t5_model = T5EncoderModel(config).eval()
    t5_model.save_pretrained(t5)
    vae_model = save_vae(root / "vae")
    save_vae(root / "other_vae", scaling_factor=0.2)
    return {"t5": t5, "vae": root / "vae", "other_vae": root / "other_vae", "modules": (t5_model, vae_model)}


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    for i, (w, h) in enumerate([(64, 32), (32, 64), (64, 32), (48, 48)]):
        write_image(root / f"{i}.png", w, h, seed=i)
        (root / f"{i}.txt").write_text(CORPUS[i])
    return root


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    prepare.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_prepare_encodes_then_does_nothing(models, data, tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = [str(data), "--cache", str(cache), "--text-encoder", str(models["t5"]), "--vae", str(models["vae"])]
    argv += ["--resolution", "32", "--max-tokens", "48", "--batch-size", "2", "--shard-size", "3", "--device", "cpu"]
    assert prepare.run(parse(*argv)) == 0
    assert "4 samples in 2 shards (2 encoded now, 0 already complete)" in capsys.readouterr().out
    assert prepare.run(parse(*argv)) == 0
    assert "(0 encoded now, 2 already complete)" in capsys.readouterr().out

    from pixart.text import TextEncoder, load_tokenizer
    from pixart.vae import VAE

    settings = read_index(cache)["settings"]
    assert settings["max_tokens"] == 48 and settings["vae"]["scaling_factor"] == pytest.approx(0.13025)
    assert len(settings["text_encoder"]["config_sha256"]) == 64
    ds = CachedDataset(cache, long_caption_ratio=0.0)
    t5_model, vae_model = models["modules"]  # the weights prepare loaded from disk, still in memory
    vae, t5 = VAE(vae_model), TextEncoder(load_tokenizer(models["t5"]), t5_model, max_length=48)
    records = load_index(data).records
    for i in range(len(ds)):
        sample = ds[i]
        pixels = load_pixels(records[i].path, sample["size"])[None]  # (1, 3, H, W)
        with torch.no_grad():
            dist = vae.model.encode(pixels).latent_dist
        eps = torch.randn(dist.mean.shape[1:], generator=sample_generator(0, 0, i, STREAM_NOISE))
        expected = vae.scaling_factor * (dist.mean[0] + dist.std[0] * eps)
        assert sample["latent"].shape == expected.shape == (4, sample["size"][0] // 8, sample["size"][1] // 8)
        assert torch.allclose(sample["latent"], expected, rtol=2e-3, atol=2e-3)  # float16 storage
        features, mask = t5.encode([records[i].caption])
        assert torch.equal(sample["caption_mask"], mask[0].bool())
        assert torch.allclose(sample["caption"], features[0] * mask[0, :, None], atol=5e-3)


def test_prepare_refuses_a_cache_of_another_vae(models, data, tmp_path):
    cache = tmp_path / "cache"
    common = ["--cache", str(cache), "--text-encoder", str(models["t5"]), "--fixed-size", "32x32", "--device", "cpu"]
    assert prepare.run(parse(str(data), *common, "--vae", str(models["vae"]), "--max-tokens", "8")) == 0
    with pytest.raises(ValueError, match="vae"):
        prepare.run(parse(str(data), *common, "--vae", str(models["other_vae"]), "--max-tokens", "8"))
    assert {k for k in CachedDataset(cache).bins} == {"1.00"}  # the fixed size: one bucket


def test_prepare_fails_fast_on_a_wrong_path(models, tmp_path):
    common = ["--cache", str(tmp_path / "c"), "--text-encoder", str(models["t5"]), "--vae", str(models["vae"])]
    args = parse(str(tmp_path / "missing"), *common)
    with pytest.raises(FileNotFoundError, match="missing"):
        prepare.run(args)
    args = parse(
        str(tmp_path), "--cache", str(tmp_path / "c"), "--text-encoder", str(tmp_path / "no-t5"), "--vae", "x"
    )
    with pytest.raises(FileNotFoundError):
        prepare.run(args)


def test_wired_into_the_pixart_command(models, data, tmp_path, capsys):
    from pixart import cli

    if "prepare" not in cli.COMMANDS:
        pytest.skip("`prepare` is not in pixart.cli.COMMANDS yet")
    argv = ["prepare", str(data), "--cache", str(tmp_path / "c"), "--text-encoder", str(models["t5"])]
    assert cli.main([*argv, "--vae", str(models["vae"]), "--fixed-size", "32", "--max-tokens", "8"]) == 0
    assert cli.main([*argv, "--vae", str(models["other_vae"]), "--fixed-size", "32", "--max-tokens", "8"]) == 2
    assert "error:" in capsys.readouterr().err
