"""Samplers, schedules and the guided denoiser, checked without a network.

Gaussian data x0 ~ N(μ, s²) has an exact ε-prediction at every noise level and an exact probability-flow
ODE solution: (x_t - √ᾱ_t μ) / √(ᾱ_t s² + 1 - ᾱ_t) stays constant along a trajectory. So the ODE samplers
must converge to it (at their order), and the stochastic ones must produce samples with mean μ and std s.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pixart.diffusion import (
    NOISE_SCHEDULE,
    SAMPLERS,
    Conditioning,
    generators_for,
    get_sampler,
    initial_noise,
    make_denoiser,
    make_scheduler,
    noise_schedule,
    read_noise_schedule,
    sample,
)
from tests.test_pipeline import one_thread  # noqa: F401 (autouse fixture)

MU, S = 0.3, 0.5
ALPHAS = make_scheduler("ddim").alphas_cumprod.double()  # (1000,)


def gaussian_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact E[ε | x_t] for x0 ~ N(MU, S²); fractional t (Euler) interpolates ᾱ linearly."""
    t = float(t)
    lo = min(int(t), 999)
    w = t - lo
    a = ALPHAS[lo] * (1 - w) + ALPHAS[min(lo + 1, 999)] * w
    x = x.double()
    return ((1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S**2 + 1 - a)).float()


def exact_flow(z: torch.Tensor) -> torch.Tensor:
    a = ALPHAS[999]
    return MU + S * (z.double() - a.sqrt() * MU) / (a * S**2 + 1 - a).sqrt()


def ode_error(name: str, steps: int, z: torch.Tensor) -> float:
    return (sample(gaussian_eps, z, name, steps).double() - exact_flow(z)).abs().max().item()


# ---- schedules -------------------------------------------------------------------------------------------------


def test_every_sampler_uses_the_training_noise_schedule():
    for name, spec in SAMPLERS.items():
        scheduler = make_scheduler(name)
        assert scheduler.config.beta_schedule == "linear" and scheduler.config.num_train_timesteps == 1000
        assert scheduler.config.prediction_type == "epsilon" and scheduler.config.timestep_spacing == "linspace"
        assert torch.allclose(scheduler.betas[[0, -1]], torch.tensor([1e-4, 0.02]))
        scheduler.set_timesteps(spec.steps)
        assert len(scheduler.timesteps) == spec.steps and int(scheduler.timesteps[0]) == 999


def test_sampler_defaults_are_the_references():
    assert (get_sampler("dpm-solver++").steps, get_sampler("dpm-solver++").cfg) == (20, 4.5)
    assert (get_sampler("sa-solver").steps, get_sampler("sa-solver").cfg) == (25, 3.0)
    assert get_sampler("iddpm").steps == 100
    dpm = make_scheduler("dpm-solver++").config
    assert (dpm.algorithm_type, dpm.solver_order, dpm.solver_type) == ("dpmsolver++", 2, "midpoint")
    sa = make_scheduler("sa-solver")
    assert (sa.config.predictor_order, sa.config.corrector_order) == (2, 2)
    assert [sa.tau_func(t) for t in (100, 200, 500, 800, 900)] == [0, 1, 1, 1, 0]
    assert make_scheduler("iddpm").config.variance_type == "learned_range"
    assert make_scheduler("iddpm", learned_variance=False).config.variance_type == "fixed_small"
    assert not make_scheduler("ddim").config.clip_sample and not make_scheduler("iddpm").config.clip_sample
    with pytest.raises(ValueError, match="unknown sampler 'plms'; allowed: dpm-solver\\+\\+, sa-solver"):
        get_sampler("plms")


def test_noise_schedule_comes_from_a_scheduler_folder(tmp_path):
    assert read_noise_schedule(tmp_path) == NOISE_SCHEDULE  # no scheduler_config.json: the defaults
    make_scheduler("dpm-solver++", noise_schedule({"beta_end": 0.012})).save_config(tmp_path)
    schedule = read_noise_schedule(tmp_path)
    assert schedule["beta_end"] == 0.012 and schedule["beta_start"] == 1e-4
    assert make_scheduler("ddim", schedule).config.beta_end == 0.012


# ---- ODE samplers: convergence and order ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dpm-solver++", "ddim", "euler"])
def test_ode_samplers_converge_to_the_exact_flow(name):
    z = initial_noise((1, 4, 8, 8), torch.Generator().manual_seed(0))
    errors = [ode_error(name, n, z) for n in (10, 20, 40)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < (0.02 if name == "dpm-solver++" else 0.2)
    assert torch.equal(sample(gaussian_eps, z, name, 5), sample(gaussian_eps, z, name, 5))  # deterministic


def test_dpm_solver_is_higher_order_than_ddim():
    z = initial_noise((1, 4, 8, 8), torch.Generator().manual_seed(0))
    dpm = [ode_error("dpm-solver++", n, z) for n in (20, 40)]
    ddim = [ode_error("ddim", n, z) for n in (20, 40)]
    assert dpm[1] < ddim[1] / 4
    assert dpm[0] / dpm[1] > 3 > ddim[0] / ddim[1] > 1.5  # 2nd order vs 1st order


# ---- stochastic samplers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,steps", [("sa-solver", 25), ("iddpm", 100)])
def test_stochastic_samplers_sample_the_data_distribution(name, steps):
    z = initial_noise((1, 4, 32, 32), torch.Generator().manual_seed(0))
    out = sample(gaussian_eps, z, name, steps, generators=torch.Generator().manual_seed(1))
    assert abs(out.mean().item() - MU) < 0.05 and abs(out.std().item() - S) < 0.06


def test_stochastic_samplers_follow_their_generators():
    z = initial_noise((2, 4, 8, 8), generators_for([0, 1]))
    a = sample(gaussian_eps, z, "sa-solver", 6, generators=generators_for([7, 8]))
    b = sample(gaussian_eps, z, "sa-solver", 6, generators=generators_for([7, 8]))
    c = sample(gaussian_eps, z, "sa-solver", 6, generators=generators_for([7, 9]))
    assert torch.equal(a, b)
    assert torch.equal(a[0], c[0]) and not torch.allclose(a[1], c[1])  # image 0 depends on its generator only
    single = sample(gaussian_eps, z[1:], "sa-solver", 6, generators=generators_for([8]))
    assert torch.allclose(a[1:], single, atol=1e-6)


def test_iddpm_learned_variance_at_its_lower_bound_is_the_posterior_variance():
    """learned_range interpolates log β̃ (v = -1) .. log β (v = 1); v = -1 must equal fixed_small."""
    z = initial_noise((1, 4, 8, 8), torch.Generator().manual_seed(0))

    def with_variance(x, t):
        return torch.cat([gaussian_eps(x, t), -torch.ones_like(x)], dim=1)

    learned = sample(with_variance, z, "iddpm", 20, learned_variance=True, generators=torch.Generator().manual_seed(3))
    fixed = sample(gaussian_eps, z, "iddpm", 20, generators=torch.Generator().manual_seed(3))
    assert torch.allclose(learned, fixed, atol=1e-5)


# ---- noise ----------------------------------------------------------------------------------------------------------


def test_initial_noise_per_image_and_per_batch():
    per_image = initial_noise((3, 4, 2, 5), generators_for([5, 6, 7]))
    for i, seed in enumerate([5, 6, 7]):
        assert torch.equal(
            per_image[i : i + 1], torch.randn((1, 4, 2, 5), generator=torch.Generator().manual_seed(seed))
        )
    one = initial_noise((3, 4, 2, 5), torch.Generator().manual_seed(5))
    assert torch.equal(one, torch.randn((3, 4, 2, 5), generator=torch.Generator().manual_seed(5)))
    assert initial_noise((1, 4, 2, 5), torch.Generator().manual_seed(0), dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        initial_noise((3, 4, 2, 5), generators_for([1, 2]))


# ---- the guided denoiser ------------------------------------------------------------------------------------------


class SpyModel(torch.nn.Module):
    """ε = x + mean caption feature over unmasked tokens; variance channels = 10 * that; records calls."""

    def __init__(self):
        super().__init__()
        self.cfg = SimpleNamespace(in_channels=2, micro_condition=False)
        self.calls = []

    def forward(self, x, t, caption, mask):
        self.calls.append((x.shape[0], mask.clone()))
        m = mask.float()[..., None]  # (B, L, 1)
        feature = (caption * m).sum(1).mean(-1) / m.sum(1).squeeze(-1)  # (B,)
        eps = x + feature[:, None, None, None]
        return torch.cat([eps, 10 * eps], dim=1)


def _conditioning():
    embeds = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    null = torch.full((2, 4, 3), -1.0)
    null[:, 1:] = 5.0  # padding positions of the null caption differ from its first token
    null_mask = torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0]])
    return Conditioning(embeds, mask, null, null_mask)


def test_guidance_on_all_channels_and_variance_from_the_conditional_branch():
    model, cond = SpyModel(), _conditioning()
    x = torch.randn(2, 2, 3, 3)
    plain = make_denoiser(model, cond, 1.0, keep_variance=True)(x, torch.tensor(10))
    guided = make_denoiser(model, cond, 3.0, keep_variance=True)(x, torch.tensor(10))
    null_only = SpyModel()(x, 10, cond.null_embeds, cond.null_mask)[:, :2]
    expected_eps = null_only + 3.0 * (plain[:, :2] - null_only)
    assert torch.allclose(guided[:, :2], expected_eps)
    assert torch.allclose(guided[:, 2:], plain[:, 2:])  # variance: conditional branch, unguided
    assert make_denoiser(model, cond, 3.0)(x, torch.tensor(10)).shape == (2, 2, 3, 3)  # ε only by default


def test_cfg_one_skips_the_null_branch_and_semantics_pick_the_null_mask():
    model, cond = SpyModel(), _conditioning()
    x = torch.randn(2, 2, 3, 3)
    make_denoiser(model, cond, 1.0)(x, torch.tensor(1))
    assert model.calls[-1][0] == 2
    make_denoiser(model, cond, 2.0, semantics="diffusers")(x, torch.tensor(1))
    # Column 4 pads every row, so it is trimmed (3 columns reach the model)
    assert model.calls[-1][0] == 4 and torch.equal(model.calls[-1][1][:2], cond.null_mask[:, :3])
    make_denoiser(model, cond, 2.0, semantics="official")(x, torch.tensor(1))
    assert torch.equal(model.calls[-1][1][:2], cond.mask[:, :3])  # the prompt's mask on the null caption
    with pytest.raises(ValueError, match="allowed: diffusers, official"):
        make_denoiser(model, cond, 2.0, semantics="a1111")
    with pytest.raises(ValueError, match="needs the negative"):
        make_denoiser(model, Conditioning(cond.embeds, cond.mask), 2.0)


def test_steps_must_be_positive():
    with pytest.raises(ValueError, match="steps=0"):
        sample(gaussian_eps, torch.zeros(1, 4, 2, 2), "ddim", 0)
