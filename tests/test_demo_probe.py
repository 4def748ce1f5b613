"""The caption-reliance probe: exact on hand-made models, incremental on a real (tiny) training run."""

from __future__ import annotations

import csv

import pytest
import torch
from test_train import cache, config  # noqa: F401  (cache: a module fixture)

from pixart.demo.probe import caption_gain, parse_timesteps, probe_batch, probe_run
from pixart.diffusion.losses import GaussianDiffusion
from pixart.train.loop import main


def batch(n=4):
    g = torch.Generator().manual_seed(0)
    return {
        "latent": torch.randn(n, 4, 2, 2, generator=g),
        "caption": torch.randn(n, 3, 5, generator=g),
        "caption_mask": torch.ones(n, 3, dtype=torch.bool),
    }


def test_a_model_that_ignores_the_caption_gains_nothing():
    rows = caption_gain(lambda x, t, c, m: torch.zeros(len(x), 8, 2, 2), batch())
    assert [r["t"] for r in rows] == [300, 500, 700]
    assert all(r["gain_pct"] == 0.0 and r["mse_true"] > 0 for r in rows)


def test_gain_equals_the_hand_computed_value():
    """A model that predicts the noise exactly when given its own caption, and zeros otherwise."""
    b = batch()
    owner = {float(c.sum()): i for i, c in enumerate(b["caption"])}

    def model(xt, t, caption, mask):
        out = torch.zeros(len(xt), 8, *xt.shape[2:])
        for i, c in enumerate(caption):
            if owner[float(c.sum())] == i:  # the right caption: recover ε from x_t and the known x0
                d, ti = GaussianDiffusion.linear(1000), t[i : i + 1]
                a, s = d.at("sqrt_acp", ti, xt[i : i + 1])[0], d.at("sqrt_one_minus_acp", ti, xt[i : i + 1])[0]
                out[i, :4] = (xt[i] - a * b["latent"][i]) / s
        return out

    for r in caption_gain(model, b, timesteps=(500,)):
        noise = torch.randn(b["latent"].shape, generator=torch.Generator().manual_seed(500))
        assert abs(r["mse_true"]) < 1e-10
        assert abs(r["mse_shuffled"] - (noise**2).mean().item()) < 1e-6


def test_probe_run_on_a_tiny_training_run(cache, tmp_path):  # noqa: F811 (the fixture)
    run = tmp_path / "run"
    main(config(cache, run, "max_steps=4", "checkpoint_every=2"))
    rows = probe_run(run, n=3)
    assert [r["step"] for r in rows] == [2, 4]
    assert probe_run(run) == []  # nothing new: every checkpoint is already in the CSV
    with (run / "caption-gain.csv").open(newline="") as f:
        saved = list(csv.DictReader(f))
    assert [int(r["step"]) for r in saved] == [2, 4]
    assert all(torch.isfinite(torch.tensor(float(r[f"gain_t{t}"]))) for r in saved for t in (300, 500, 700))
    assert (run / "caption-gain.png").stat().st_size > 0
    assert len(probe_batch(cache, n=3)["latent"]) >= 2

    # other timesteps: their own CSV and plot, the default one untouched, the same gain where t coincides
    other = probe_run(run, n=3, timesteps=(500, 820))
    assert [r["step"] for r in other] == [2, 4] and set(other[0]) == {"step"} | {
        f"{k}_t{t}" for t in (500, 820) for k in ("gain", "mse_true", "mse_shuffled")
    }
    assert other[1]["gain_t500"] == pytest.approx(rows[1]["gain_t500"], rel=1e-5)
    assert (run / "caption-gain-t500-820.png").stat().st_size > 0
    assert len((run / "caption-gain-t500-820.csv").read_text().splitlines()) == 3
    assert len((run / "caption-gain.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("text", ["", "300,abc", "300,300", "1000", "-1"])
def test_bad_timesteps_are_refused(text):
    with pytest.raises(ValueError, match="timesteps"):
        parse_timesteps(text)
    assert parse_timesteps("480,650,820") == (480, 650, 820)
