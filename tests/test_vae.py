"""The VAE wrapper: scaling factor, decode equal to diffusers', tiled decode close to untiled decode."""

from __future__ import annotations

import json

import pytest
import torch

from pixart.vae import SDXL_SCALING_FACTOR, VAE, resolve_vae_folder
from tests.test_pipeline import one_thread, tiny_vae  # noqa: F401 (autouse fixture)


def _latents(h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(seed)) * SDXL_SCALING_FACTOR * 5


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    return (10 * torch.log10(4 / ((a - b) ** 2).mean())).item()


def test_decode_is_diffusers_decode_of_unscaled_latents():
    model = tiny_vae(scaling_factor=0.2)
    z = _latents(8, 12)
    with torch.no_grad():
        expected = model.decode(z / 0.2).sample
    got = VAE(model).decode(z)  # channels-last convolutions on CPU: the same sums in another order
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert got.is_contiguous() and next(model.parameters()).device.type == "cpu"
    assert model.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert VAE(model).decode(torch.cat([z, z])).shape == (2, 3, 64, 96)


def test_scaling_factor_from_the_config_else_sdxls(tmp_path):
    tiny_vae(scaling_factor=0.2).save_pretrained(tmp_path / "a")
    assert VAE.from_folder(tmp_path / "a").scaling_factor == 0.2
    tiny_vae().save_pretrained(tmp_path / "b")
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    del config["scaling_factor"]  # AutoencoderKL would default to SD 1.5's 0.18215
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    assert VAE.from_folder(tmp_path / "b").scaling_factor == SDXL_SCALING_FACTOR


def test_fp16_stays_fp32_when_the_config_asks_for_upcasting(tmp_path):
    tiny_vae(force_upcast=True).save_pretrained(tmp_path / "up")
    tiny_vae(force_upcast=False).save_pretrained(tmp_path / "half")
    assert VAE.from_folder(tmp_path / "up", dtype=torch.float16).dtype == torch.float32
    assert VAE.from_folder(tmp_path / "half", dtype=torch.float16).dtype == torch.float16


def test_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_vae_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_vae_folder(tmp_path / "empty")
    tiny_vae().save_pretrained(tmp_path / "pipe" / "vae")
    assert resolve_vae_folder(tmp_path / "pipe") == tmp_path / "pipe" / "vae"  # a pipeline folder's vae/


def test_tiled_decode_agrees_with_untiled_decode():
    """Tolerance (stated): tiles normalise with their own GroupNorm statistics and are cross-faded over 25%
    overlaps, so tiled output is close to, not equal to, untiled output. With this tiny random VAE on a
    256x384 image: >= 27 dB PSNR with 128 px tiles, >= 33 dB with 256 px tiles (unrelated images: ~12 dB);
    a tile covering the whole image is exact. Trained VAEs, being smoother, agree more closely."""
    vae = VAE(tiny_vae())
    z = _latents()
    full = vae.decode(z, tile=False)
    assert torch.equal(vae.decode(z, tile=True, tile_size=512), full)
    small, large = vae.decode(z, tile=True, tile_size=128), vae.decode(z, tile=True, tile_size=256)
    assert small.shape == large.shape == full.shape == (1, 3, 256, 384)
    assert _psnr(small, full) >= 27 and _psnr(large, full) >= 33
    assert _psnr(vae.decode(_latents(seed=1), tile=False), full) < 15  # what "different" looks like
    with pytest.raises(ValueError, match="multiple of 8"):
        vae.decode(z, tile=True, tile_size=100)


def test_automatic_tiling_when_an_untiled_decode_would_not_fit(monkeypatch):
    """~4 KB per pixel in float32: 2048x2048 needs ~16 GiB, 3840x2560 ~38 GiB."""
    vae = VAE(tiny_vae(sample_size=1024))
    monkeypatch.setattr("pixart.memory.available_memory", lambda device: 24 * 2**30)
    assert not vae.should_tile(1024, 1024) and not vae.should_tile(2048, 2048)
    assert vae.should_tile(2560, 3840)
    monkeypatch.setattr("pixart.memory.available_memory", lambda device: 8 * 2**30)
    assert vae.should_tile(2048, 2048) and not vae.should_tile(1024, 1024)
    monkeypatch.setattr("pixart.memory.available_memory", lambda device: 2**20)
    assert not vae.should_tile(768, 1024)  # fits in one tile: tiling would not help
