"""The shape probe: exact on hand-made models, every bucket of a real cache, and the command on real weights."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize, tiny_config
from test_train import cache  # noqa: F401  (a module fixture: 9 scenes in buckets 32x16, 32x32 and 16x32)

from pixart.checkpoint import save_transformer
from pixart.demo.shape_probe import bucket_batches, bucket_mse, clean_estimates, main, probe, square_label
from pixart.diffusion.losses import GaussianDiffusion
from pixart.model import PixArtSigma


def batch(h, w, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "latent": torch.randn(n, 4, h, w, generator=g),
        "caption": torch.randn(n, 3, 5, generator=g),
        "caption_mask": torch.ones(n, 3, dtype=torch.bool),
    }


def zeros(xt, t, caption, mask):
    return torch.zeros(len(xt), 8, *xt.shape[2:])


def noise_at(shape, t):
    return torch.randn(shape, generator=torch.Generator().manual_seed(t))


def test_a_zero_model_scores_the_mean_square_of_its_target():
    b = batch(2, 3)
    eps = bucket_mse(zeros, b, (100, 900))
    assert eps == pytest.approx([(noise_at(b["latent"].shape, t) ** 2).mean().item() for t in (100, 900)], rel=1e-6)
    d = GaussianDiffusion.linear(1000)
    t = torch.full((3,), 900)
    v = d.velocity(b["latent"], noise_at(b["latent"].shape, 900), t)
    assert bucket_mse(zeros, b, (900,), "v") == pytest.approx([(v**2).mean().item()], rel=1e-6)


def test_an_exact_model_scores_zero_and_the_ratio_is_each_bucket_against_the_square():
    def exact_on_squares(xt, t, caption, mask):  # recovers ε on square grids, predicts 0 elsewhere
        if xt.shape[2] != xt.shape[3]:
            return zeros(xt, t, caption, mask)
        noise = noise_at(xt.shape, int(t[0]))
        return torch.cat([noise, torch.zeros_like(noise)], dim=1)

    batches = {"32x16": batch(2, 4), "32x32": batch(4, 4)}
    rows = probe({"m": (exact_on_squares, "epsilon"), "z": (zeros, "epsilon")}, batches, (500,))
    assert [(r["weights"], r["bucket"]) for r in rows] == [
        ("m", "32x16"),
        ("m", "32x32"),
        ("z", "32x16"),
        ("z", "32x32"),
    ]
    m, z = rows[:2], rows[2:]
    assert m[1]["mse_t500"] == 0.0 and m[1]["ratio"] == 1.0 and m[0]["ratio"] == float("inf")
    assert z[1]["ratio"] == 1.0 and z[0]["ratio"] == pytest.approx(z[0]["mse_t500"] / z[1]["mse_t500"])
    assert probe({"z": (zeros, "epsilon")}, {"32x16": batch(2, 4)}, (500,))[0]["ratio"] is None  # no square bucket


def test_square_label():
    assert square_label(["32x16", "24x24", "16x16"]) == "24x24"
    assert square_label(["32x16", "16x32"]) is None


def test_bucket_batches_reads_every_bucket_of_the_cache(cache):  # noqa: F811 (the fixture)
    batches = bucket_batches([cache], n=2)
    assert set(batches) == {"32x16", "32x32", "16x32"}
    assert all(1 <= len(b["latent"]) <= 2 for b in batches.values())
    assert batches["32x16"]["latent"].shape[2:] == (2, 4)  # (h, w) latents of a 32 wide, 16 high image


def test_the_command_on_saved_weights(cache, tmp_path, capsys):  # noqa: F811 (the fixture)
    weights = tmp_path / "dit-x" / "final.safetensors"
    save_transformer(randomize(PixArtSigma(tiny_config(caption_channels=6, sample_size=4))).eval(), weights)
    out = tmp_path / "probe.md"
    assert main([str(weights), "--cache", str(cache), "-n", "2", "--timesteps", "300,900", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert table == out.read_text()
    lines = table.splitlines()
    assert lines[0] == "| weights | bucket | n | t=300 | t=900 | ratio to square |" and len(lines) == 5
    square = next(line for line in lines if "| 32x32 |" in line)
    assert square.startswith("| dit-x/final | 32x32 |") and square.endswith("| 1.00 |")


@pytest.mark.parametrize("extra", [["-n", "0"], ["--timesteps", "5000"], ["--cache", "/nonexistent"]])
def test_bad_arguments_exit_with_a_usage_error(cache, tmp_path, extra):  # noqa: F811 (the fixture)
    weights = tmp_path / "w.safetensors"
    save_transformer(PixArtSigma(tiny_config(caption_channels=6, sample_size=4)), weights)
    with pytest.raises(SystemExit) as e:
        main([str(weights), "--cache", str(cache), *extra])
    assert e.value.code == 2


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_clean_estimates_of_an_exact_model_are_the_scenes(prediction):
    d, b = GaussianDiffusion.linear(1000), batch(2, 3)

    def exact(xt, t, caption, mask):
        noise = noise_at(xt.shape, int(t[0]))
        target = noise if prediction == "epsilon" else d.velocity(b["latent"], noise, t)
        return torch.cat([target, torch.zeros_like(target)], dim=1)

    assert torch.allclose(clean_estimates(exact, b, 900, prediction), b["latent"], atol=1e-4)


def test_the_command_draws_the_clean_estimates(cache, tmp_path):  # noqa: F811 (the fixture)
    from PIL import Image
    from test_pipeline import tiny_vae

    weights = tmp_path / "dit-x" / "final.safetensors"
    save_transformer(randomize(PixArtSigma(tiny_config(caption_channels=6, sample_size=4))).eval(), weights)
    tiny_vae().save_pretrained(tmp_path / "vae")
    out = tmp_path / "shapes.png"
    args = [str(weights), "--cache", str(cache), "-n", "2", "--timesteps", "900"]
    assert main([*args, "--picture", str(out), "--vae", str(tmp_path / "vae")]) == 0
    # the first non-square bucket, 32x16: its 2 scenes side by side, then the one model's estimates below
    assert Image.open(out).size == (2 * 32, 2 * 16)
    with pytest.raises(SystemExit) as e:
        main([*args, "--picture", str(tmp_path / "other.png")])  # no --vae to decode with
    assert e.value.code == 2 and not (tmp_path / "other.png").exists()
