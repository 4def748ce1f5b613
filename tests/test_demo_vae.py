"""The demo VAE recipe: deterministic data, training step, exact resume, PSNR, and the exported diffusers folder."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from pixart.demo.vae import (
    VAETrainConfig,
    build_vae,
    detail_rms,
    heldout_scenes,
    init_weights,
    latent_scale,
    psnr,
    train,
    training_batch,
    vae_loss,
)


def tiny_cfg(**changes) -> VAETrainConfig:
    base = VAETrainConfig(
        block_out_channels=(8, 8, 8, 8), norm_num_groups=4, crops=((32, 32), (48, 32)),
        scene_sizes=((64, 64), (64, 48)), batch_pixels=2 * 32 * 32, steps=4, warmup=1, lr=2e-3, log_every=1,
        save_every_min=1e9, eval_scenes=1, final_eval_scenes=2, scale_scenes=2, eval_sizes=((64, 64), (64, 48)),
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def test_training_batch_is_a_function_of_the_step():
    cfg = tiny_cfg()
    a, b, c = training_batch(cfg, 3), training_batch(cfg, 3), training_batch(cfg, 4)
    assert torch.equal(a, b) and not (a.shape == c.shape and torch.equal(a, c))
    assert a.shape[1] == 3 and a.min() >= -1 and a.max() <= 1
    assert a.shape[0] == max(1, cfg.batch_pixels // (a.shape[2] * a.shape[3]))


def test_psnr_of_known_error():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[1] += 2 * 10 / 255  # ten 8-bit levels everywhere -> 20 log10(255 / 10)
    out = psnr(x, y)
    assert out[0] > 90 and out[1].item() == pytest.approx(20 * np.log10(25.5), abs=1e-3)


def test_latent_scale_ignores_the_flat_background():
    # Two 4x4 latents: a flat colour per channel (any level) plus, in one image, one pixel 2 above it in channel 0.
    z = torch.tensor([3.0, -1.0, 0.5, 7.0])[None, :, None, None].repeat(2, 1, 4, 4)  # (2, 4, 4, 4)
    z[1] *= -2.0
    assert detail_rms(z) == 0.0  # backgrounds alone: no detail, however far from 0
    z[0, 0, 1, 2] += 2.0
    expected = (2.0**2 / z.numel()) ** 0.5  # one deviation of 2 among 128 values
    assert detail_rms(z) == pytest.approx(expected)
    assert latent_scale(detail_rms(z)) == pytest.approx(1 / expected)
    assert z.std() > 1  # SD's 1 / std would be dominated by the background levels


def test_loss_decreases_on_fixed_batch():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    vae = build_vae(cfg)
    init_weights(vae, cfg.init_logvar)
    x = training_batch(cfg, 0)
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    losses = []
    for step in range(6):
        terms = vae_loss(vae, x, cfg, torch.Generator().manual_seed(step))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"].detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_resume_matches_uninterrupted_run_and_export_round_trips(tmp_path):
    cfg = tiny_cfg()
    full = train(cfg, tmp_path / "a", tmp_path / "a_out")
    first = train(cfg, tmp_path / "b", tmp_path / "b_out", stop_at=2)
    with pytest.raises(ValueError):
        train(cfg, tmp_path / "b", tmp_path / "b_out")  # an existing checkpoint needs resume=True
    rest = train(cfg, tmp_path / "b", tmp_path / "b_out", resume=True)
    np.testing.assert_allclose(first + rest, full, rtol=1e-5)
    steps = [r.split(",")[0] for r in (tmp_path / "b" / "log.csv").read_text().splitlines()[1:] if r.split(",")[3]]
    assert steps == ["1", "2", "3", "4"]  # rows of the interrupted run are not duplicated
    report = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert report["step"] == 4 and np.isfinite(report["psnr"]) and report["scaling_factor"] > 0
    assert (tmp_path / "b" / "loss.png").is_file()

    vae = AutoencoderKL.from_pretrained(tmp_path / "b_out" / "vae", torch_dtype=torch.float32).eval()
    assert vae.config.scaling_factor == pytest.approx(report["scaling_factor"])
    assert vae.config.block_out_channels == [8, 8, 8, 8] and vae.config.latent_channels == 4
    x = heldout_scenes(cfg.eval_seed, 1, (64, 48))  # (1, 3, 48, 64): non-square, 8x down
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
        y = vae.decode(z / vae.config.scaling_factor).sample
    assert z.shape == (1, 4, 6, 8) and y.shape == x.shape and torch.isfinite(y).all()
