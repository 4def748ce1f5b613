"""`pixart.demo.noise_floor`: the model's ε error at each t next to the guess x_0 = 0, checked on models whose
errors are known in closed form."""

from __future__ import annotations

import torch

from pixart.demo.noise_floor import noise_floor
from pixart.diffusion.losses import GaussianDiffusion

DIFFUSION = GaussianDiffusion.linear(1000)


def batch(b: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "latent": 2.0 * torch.randn(b, 4, 4, 4, generator=g),
        "caption": torch.randn(b, 5, 8, generator=g),
        "caption_mask": torch.ones(b, 5, dtype=torch.bool),
    }


class Trivial(torch.nn.Module):
    """ε = x_t / sqrt(1 - ᾱ_t): the guess that the clean latent is 0."""

    def forward(self, xt, t, caption, mask):
        keep = DIFFUSION.tables["sqrt_acp"][t].float().reshape(-1, 1, 1, 1) ** 2
        return torch.cat([xt / (1 - keep).sqrt(), torch.zeros_like(xt)], dim=1)


class Zero(torch.nn.Module):
    def forward(self, xt, t, caption, mask):
        return torch.zeros(xt.shape[0], 2 * xt.shape[1], *xt.shape[2:])


def test_the_trivial_guess_scores_as_the_trivial_guess():
    for r in noise_floor(Trivial(), batch(), (10, 500, 999)):
        assert abs(r["mse_model"] - r["mse_trivial"]) <= 1e-6 * r["mse_trivial"]


def test_a_zero_model_has_the_noise_as_its_error_and_x0_error_follows():
    data = batch()
    for r in noise_floor(Zero(), data, (300, 999)):
        noise = torch.randn(data["latent"].shape, generator=torch.Generator().manual_seed(r["t"]))
        assert abs(r["mse_model"] - noise.pow(2).mean().item()) < 1e-6
        keep = DIFFUSION.tables["sqrt_acp"][r["t"]].item() ** 2
        assert abs(r["x0_rmse_model"] - (r["mse_model"] * (1 - keep) / keep) ** 0.5) < 1e-3 * r["x0_rmse_model"]
        assert abs(r["x0_rms"] - data["latent"].pow(2).mean().sqrt().item()) < 1e-6
    rows = noise_floor(Zero(), data, (999,))
    assert rows[0]["mse_model"] > rows[0]["mse_trivial"]  # at t = 999 knowing nothing beats predicting ε = 0


def test_a_missing_file_is_one_line_and_exit_code_2(tmp_path, capsys):
    import pytest

    from pixart.demo.noise_floor import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing.safetensors"), "--cache", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "missing.safetensors" in err and len(err.splitlines()) == 1


def test_a_v_model_is_scored_by_the_epsilon_its_v_implies():
    """v = 0 means ε = sqrt(1 - ᾱ_t) x_t (and x̂_0 = sqrt(ᾱ_t) x_t): its error is that ε's, not the noise's."""
    data = batch()
    for r in noise_floor(Zero(), data, (300, 999), prediction="v"):
        noise = torch.randn(data["latent"].shape, generator=torch.Generator().manual_seed(r["t"]))
        t = torch.full((3,), r["t"])
        xt = DIFFUSION.q_sample(data["latent"], t, noise)
        eps = DIFFUSION.at("sqrt_one_minus_acp", t, xt) * xt
        assert abs(r["mse_model"] - (eps - noise).pow(2).mean().item()) < 1e-5
        assert abs(r["mse_model"] - noise.pow(2).mean().item()) > 0.1


def test_the_background_reference_is_the_error_of_a_flat_latent():
    """A latent that is one flat colour plus one bright patch: the flat guess misses exactly the patch."""
    data = batch(2)
    x0 = torch.zeros(2, 4, 4, 4) + torch.tensor([1.0, -2.0])[:, None, None, None]  # flat per sample
    x0[:, :, 0, 0] += 4.0  # one pixel of 16 differs, so the median is the flat value
    data["latent"] = x0
    (row,) = noise_floor(Zero(), data, (500,))
    assert abs(row["x0_rmse_background"] - (16.0 / 16) ** 0.5) < 1e-6  # (4² on 1 of 16 pixels) -> RMS 1


class Shifted(torch.nn.Module):
    """The ε whose x̂_0 is the true latent plus a per-channel offset: a wrong background, perfect detail."""

    def __init__(self, x0: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.x0, self.shift = x0, shift

    def forward(self, xt, t, caption, mask):
        keep = DIFFUSION.tables["sqrt_acp"][t].float().reshape(-1, 1, 1, 1) ** 2
        eps = (xt - keep.sqrt() * (self.x0 + self.shift)) / (1 - keep).sqrt()
        return torch.cat([eps, torch.zeros_like(xt)], dim=1)


def test_the_x0_error_splits_into_a_wrong_background_and_the_detail():
    data = batch(2)
    shift = torch.tensor([0.5, -1.0, 0.0, 2.0])[None, :, None, None]  # (1, C, 1, 1)
    (row,) = noise_floor(Shifted(data["latent"], shift), data, (700,))
    assert abs(row["x0_rmse_model_background"] - shift.pow(2).mean().sqrt().item()) < 1e-3
    assert row["x0_rmse_model_detail"] < 1e-3
    assert abs(row["x0_rmse_model"] - row["x0_rmse_model_background"]) < 1e-2  # all of the error is the background
    (zero,) = noise_floor(Zero(), data, (700,), prediction="v")  # x̂_0 = sqrt(ᾱ) x_t: noise, no background
    assert zero["x0_rmse_model_detail"] > row["x0_rmse_model_detail"] + 0.1
