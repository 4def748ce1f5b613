"""Checkpoint loading and saving: format detection, official .pth variants, security, one-line errors."""

from __future__ import annotations

import argparse
import builtins
import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from pixart.checkpoint import (
    CheckpointError,
    load_state_dict_file,
    load_transformer,
    read_checkpoint,
    save_transformer,
    write_checkpoint,
)
from pixart.convert import ours_to_diffusers
from pixart.model import PixArtSigma
from tests.conftest import randomize, tiny_config

# ---- helpers (also used by test_convert.py and test_cli_info_convert.py) --------------------------------------------


def tiny_model(seed: int = 0, **changes) -> PixArtSigma:
    return randomize(PixArtSigma(tiny_config(**changes)), seed).eval()


def assert_same_weights(a: dict, b: dict) -> None:
    """Same key set and bit-identical tensors (dtype included)."""
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def outputs(model: PixArtSigma) -> torch.Tensor:
    """The model's output on fixed inputs (micro-conditions included when the model has them)."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, cfg.in_channels, 8, 12, generator=gen)
    caption = torch.randn(2, 5, cfg.caption_channels, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    micro = {}
    if cfg.micro_condition:
        micro = {"resolution": torch.tensor([[64.0, 96.0]] * 2), "aspect_ratio": torch.tensor([[1.5]] * 2)}
    with torch.no_grad():
        return model(x.to(model.x_embedder.proj.weight.dtype), torch.tensor([3.0, 700.0]), caption, mask, **micro)


def no_temp_files(folder) -> bool:
    return not [p for p in os.listdir(folder) if ".tmp-" in p or ".old-" in p]


# ---- our format --------------------------------------------------------------------------------------------------


def test_save_load_roundtrip_keeps_config_weights_and_outputs(tmp_path):
    model = tiny_model(kv_compress_layers=(1,), kv_compress_factor=2, max_tokens=6)
    path = save_transformer(model, tmp_path / "m.safetensors")
    loaded = load_transformer(path)
    assert loaded.cfg == model.cfg
    assert not loaded.training
    assert_same_weights(model.state_dict(), loaded.state_dict())
    assert torch.equal(outputs(model), outputs(loaded))
    assert no_temp_files(tmp_path)


def test_save_replaces_atomically_or_refuses(tmp_path):
    path = tmp_path / "m.safetensors"
    save_transformer(tiny_model(0), path)
    save_transformer(tiny_model(1), path)  # default: replace
    assert torch.equal(load_file(path)["t_block.1.bias"], tiny_model(1).state_dict()["t_block.1.bias"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_transformer(tiny_model(2), path, overwrite=False)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_transformer(tiny_model(), tmp_path / "m.pth")
    assert no_temp_files(tmp_path)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("pixart.checkpoint.write_safetensors", boom)
    for to, name in [("pixart", "m.safetensors"), ("diffusers", "folder")]:
        with pytest.raises(OSError, match="disk full"):
            write_checkpoint(tiny_model(), tmp_path / name, to)
    assert os.listdir(tmp_path) == []


def test_dtype_argument_and_file_dtype(tmp_path):
    model = tiny_model().to(torch.bfloat16)
    path = save_transformer(model, tmp_path / "m.safetensors")
    assert load_transformer(path).x_embedder.proj.weight.dtype == torch.bfloat16  # None keeps the file's
    half = load_transformer(path, dtype=torch.float16)
    assert {t.dtype for t in half.state_dict().values()} == {torch.float16}


# ---- official files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrapped,pos_embed,prefix", [(True, True, False), (False, False, True), (True, False, True), (False, True, False)]
)
def test_official_pth_variants_load_identically(tmp_path, wrapped, pos_embed, prefix):
    model = tiny_model()
    sd = dict(model.state_dict())
    if pos_embed:
        sd["pos_embed"] = torch.zeros(1, 16, model.cfg.hidden_size)
    if prefix:
        sd = {f"module.{k}": v for k, v in sd.items()}
    torch.save({"state_dict": sd, "epoch": 3} if wrapped else sd, tmp_path / "ckpt.pth")
    loaded = load_transformer(tmp_path / "ckpt.pth", config=model.cfg)
    assert loaded.cfg == model.cfg
    assert_same_weights(model.state_dict(), loaded.state_dict())
    assert torch.equal(outputs(model), outputs(loaded))


def test_official_safetensors_and_flags(tmp_path):
    model = tiny_model(num_heads=1)  # one head: what a 48-wide file without config is assumed to have
    save_file(model.state_dict(), tmp_path / "weights.safetensors")
    cfg, _, info = read_checkpoint(tmp_path / "weights.safetensors", sample_size=8, pe_interpolation=1.0)
    assert info.format == "official" and cfg == model.cfg
    # one flag given: the other follows the Sigma rule pe_interpolation = sample_size * 8 / 512
    cfg, _, _ = read_checkpoint(tmp_path / "weights.safetensors", sample_size=32)
    assert cfg.pe_interpolation == 0.5


def test_ema_state_dict(tmp_path):
    main, ema = tiny_model(0), tiny_model(1)
    torch.save({"state_dict": main.state_dict(), "state_dict_ema": ema.state_dict()}, tmp_path / "train.pth")
    cfg = main.cfg
    assert_same_weights(load_transformer(tmp_path / "train.pth", config=cfg).state_dict(), main.state_dict())
    assert_same_weights(load_transformer(tmp_path / "train.pth", config=cfg, ema=True).state_dict(), ema.state_dict())
    torch.save({"state_dict": main.state_dict()}, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="state_dict_ema"):
        load_transformer(tmp_path / "plain.pth", config=cfg, ema=True)


def test_config_guessed_from_released_file_name(tmp_path, caplog):
    torch.save({"state_dict": tiny_model().state_dict()}, tmp_path / "PixArt-Sigma-XL-2-512-MS.pth")
    with caplog.at_level(logging.WARNING, logger="pixart.checkpoint"):
        cfg, _, info = read_checkpoint(tmp_path / "PixArt-Sigma-XL-2-512-MS.pth")
    assert (cfg.sample_size, cfg.pe_interpolation) == (64, 1.0)
    assert "from the file name" in info.config_source
    assert "carries no config" not in caplog.text


def test_config_fallback_warns_with_preset_and_flag(tmp_path, caplog):
    torch.save(tiny_model().state_dict(), tmp_path / "model.pth")
    with caplog.at_level(logging.WARNING, logger="pixart.checkpoint"):
        cfg, _, _ = read_checkpoint(tmp_path / "model.pth")
    assert cfg.sample_size == 128 and cfg.pe_interpolation == 2.0
    assert "PixArt-Sigma-XL-2-1024-MS" in caplog.text and "--preset" in caplog.text


def test_micro_conditioned_file_keeps_its_caption_length(tmp_path):
    model = tiny_model(micro_condition=True, max_tokens=5)  # alpha: 120 tokens instead of 300
    torch.save({"state_dict": model.state_dict()}, tmp_path / "alpha.pth")
    loaded = load_transformer(tmp_path / "alpha.pth", config=tiny_config())
    assert loaded.cfg.micro_condition and loaded.cfg.max_tokens == 5
    assert torch.equal(outputs(model), outputs(loaded))


def test_load_state_dict_file_reads_every_kind(tmp_path):
    sd = tiny_model().state_dict()
    save_file(sd, tmp_path / "a.safetensors")
    torch.save(sd, tmp_path / "b.bin")
    torch.save({"state_dict": sd}, tmp_path / "c.pth")
    for name in ("a.safetensors", "b.bin", "c.pth"):
        assert_same_weights(load_state_dict_file(tmp_path / name), sd)


# ---- diffusers files without the null caption ----------------------------------------------------------------------


def test_diffusers_file_without_null_caption_keeps_initial_buffer(tmp_path, caplog):
    model = tiny_model()
    sd = ours_to_diffusers(model.state_dict(), model.cfg)
    del sd["caption_projection.y_embedding"]
    save_file(sd, tmp_path / "diffusion_pytorch_model.safetensors")  # a bare diffusers-layout file, no config
    with caplog.at_level(logging.DEBUG, logger="pixart.checkpoint"):
        loaded = load_transformer(tmp_path / "diffusion_pytorch_model.safetensors", config=model.cfg)
    assert "y_embedder.y_embedding" in caplog.text
    null = loaded.y_embedder.y_embedding
    assert null.shape == (model.cfg.max_tokens, model.cfg.caption_channels) and not null.is_meta
    expected = {k: v for k, v in model.state_dict().items() if k != "y_embedder.y_embedding"}
    got = {k: v for k, v in loaded.state_dict().items() if k != "y_embedder.y_embedding"}
    assert_same_weights(expected, got)


# ---- security ------------------------------------------------------------------------------------------------------


class _Trap:
    """Unpickling this creates the marker file: proof that a loader executed code from the checkpoint."""

    marker = ""

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("payload", ["trap", "namespace"])
def test_unsafe_pickles_are_refused_not_executed(tmp_path, payload):
    marker = tmp_path / "EXECUTED"
    trap = _Trap()
    trap.marker = str(marker)
    extra = trap if payload == "trap" else argparse.Namespace(lr=1e-4)
    torch.save({"state_dict": tiny_model().state_dict(), "args": extra}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="not executed") as err:
        load_transformer(tmp_path / "evil.pth")
    assert not marker.exists()
    if payload == "namespace":
        assert "argparse.Namespace" in str(err.value)
    assert "\n" not in str(err.value)


# ---- errors ------------------------------------------------------------------------------------------------------


def _one_line_error(path, match, **kwargs):
    with pytest.raises((CheckpointError, FileNotFoundError), match=match) as err:
        load_transformer(path, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_broken_and_unknown_files(tmp_path):
    save_transformer(tiny_model(), tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    assert "cut.safetensors" in _one_line_error(tmp_path / "cut.safetensors", "corrupt or truncated safetensors")
    (tmp_path / "header.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    _one_line_error(tmp_path / "header.safetensors", "corrupt or truncated safetensors")

    torch.save({"state_dict": tiny_model().state_dict()}, tmp_path / "m.pth")
    data = (tmp_path / "m.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    _one_line_error(tmp_path / "cut.pth", "corrupt or truncated PyTorch file")
    (tmp_path / "text.pth").write_text("hello\n")
    _one_line_error(tmp_path / "text.pth", "not a PyTorch checkpoint")

    (tmp_path / "notes.txt").write_text("not weights\n")
    _one_line_error(tmp_path / "notes.txt", "unknown checkpoint format")
    (tmp_path / "folder").mkdir()
    _one_line_error(tmp_path / "folder", "no config.json")
    _one_line_error(tmp_path / "missing.pth", "no such file")


def test_missing_unexpected_and_mismatched_keys(tmp_path):
    model = tiny_model()
    sd = dict(model.state_dict())
    meta = {"pixart_config": model.cfg.to_json()}

    def save(tensors):
        save_file(tensors, tmp_path / "m.safetensors", metadata=meta)
        return tmp_path / "m.safetensors"

    msg = _one_line_error(save({k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.bias"}), "missing 1 keys")
    assert "blocks.1.mlp.fc2.bias" in msg
    msg = _one_line_error(save({**sd, "blocks.0.extra.weight": torch.zeros(1)}), "1 unexpected keys")
    assert "blocks.0.extra.weight" in msg
    _one_line_error(
        save({**sd, "blocks.1.attn.qkv.weight": torch.zeros(96, 32)}),
        r"blocks\.1\.attn\.qkv\.weight: checkpoint \(96, 32\) vs model \(144, 48\)",
    )
    # A file whose metadata config is not ours.
    save_file(sd, tmp_path / "bad.safetensors", metadata={"pixart_config": '{"depth": 2, "width": 3}'})
    _one_line_error(tmp_path / "bad.safetensors", "invalid 'pixart_config'.*width")
    # Official layout: an extra key is named too.
    torch.save({**sd, "some.other.weight": torch.zeros(2)}, tmp_path / "x.pth")
    _one_line_error(tmp_path / "x.pth", "some.other.weight", config=model.cfg)
