"""The IDDPM objective against hand-computed values and diffusers' DDPMScheduler."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from pixart.diffusion.losses import (
    GaussianDiffusion,
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    normal_kl,
)


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion.linear(1000)


def _scheduler(variance_type="fixed_small"):
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="sample",
        variance_type=variance_type,
        clip_sample=False,
    )


def test_gaussian_kl_hand_values():
    # KL(N(0,1) || N(0,1)) = 0; KL(N(1,1) || N(0,1)) = 1/2; KL(N(0,1) || N(0,e^2)) = (-1 + 2 + e^-2) / 2.
    z = torch.zeros(1)
    assert normal_kl(z, z, z, z).item() == 0.0
    assert normal_kl(z + 1, z, z, z).item() == pytest.approx(0.5)
    assert normal_kl(z, z, z, z + 2).item() == pytest.approx(0.5 * (1 + math.exp(-2)))


def test_normal_cdf_approximation():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0])
    exact = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    torch.testing.assert_close(approx_standard_normal_cdf(x), exact, atol=2e-3, rtol=0)


def test_discretized_likelihood_hand_values():
    # Interior bin: P = Φ((x - μ + 1/255)/σ) - Φ((x - μ - 1/255)/σ); edge bins integrate to infinity.
    x = torch.tensor([0.2, -1.0, 1.0])
    means = torch.tensor([0.0, -0.99, 0.9])
    log_scales = torch.log(torch.tensor([0.1, 0.05, 0.2]))
    got = discretized_gaussian_log_likelihood(x, means, log_scales)

    def phi(v):
        return 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    expected = [
        math.log(phi((0.2 + 1 / 255) / 0.1) - phi((0.2 - 1 / 255) / 0.1)),
        math.log(phi((-1.0 + 0.99 + 1 / 255) / 0.05)),
        math.log(1 - phi((1.0 - 0.9 - 1 / 255) / 0.2)),
    ]
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_q_sample_and_posterior_match_diffusers(diffusion, seeded):
    sched = _scheduler()
    x0 = torch.randn(4, 4, 3, 3, generator=seeded)
    noise = torch.randn(4, 4, 3, 3, generator=seeded)
    t = torch.tensor([1, 10, 500, 999])
    xt = diffusion.q_sample(x0, t, noise)
    # diffusers keeps its tables in float32, ours are float64: agreement to ~1e-6.
    torch.testing.assert_close(xt, sched.add_noise(x0, noise, t), atol=1e-5, rtol=1e-5)

    mean, var, _ = diffusion.q_posterior(x0, xt, t)
    # Tolerances: diffusers forms 1 - ᾱ_t and β_t = 1 - ᾱ_t/ᾱ_{t-1} in float32, losing ~4 digits near t = 1;
    # in float64 its formulas agree with ours to 1e-12.
    for i, ti in enumerate(t.tolist()):
        torch.testing.assert_close(var[i].flatten(), sched._get_variance(ti).reshape(1).float(), atol=1e-9, rtol=1e-3)
        # step(): prev = posterior mean + sqrt(var) * z, with z drawn from the generator we pass in.
        gen = torch.Generator().manual_seed(ti)
        z = torch.randn(xt[i : i + 1].shape, generator=torch.Generator().manual_seed(ti))
        prev = sched.step(x0[i : i + 1], ti, xt[i : i + 1], generator=gen).prev_sample
        torch.testing.assert_close(prev, mean[i : i + 1] + var[i].sqrt() * z, atol=3e-4, rtol=3e-4)


def test_learned_range_variance_matches_diffusers(diffusion, seeded):
    sched = _scheduler("learned_range")
    xt = torch.randn(3, 2, 2, 2, generator=seeded)
    v = torch.rand(3, 2, 2, 2, generator=seeded) * 2 - 1
    t = torch.tensor([1, 300, 999])
    out = torch.cat([torch.zeros_like(xt), v], dim=1)
    _, log_var, _ = diffusion.p_mean_log_variance(out, xt, t)
    for i, ti in enumerate(t.tolist()):
        expected = sched._get_variance(ti, predicted_variance=v[i : i + 1])
        torch.testing.assert_close(log_var[i : i + 1], expected, atol=1e-5, rtol=1e-5)


def test_perfect_model_has_zero_mse_and_small_kl(diffusion, seeded):
    """ε̂ = ε and the variance at the true posterior (v = -1): mse = 0 and KL = 0 for t > 0."""
    x0 = torch.randn(3, 4, 4, 4, generator=seeded).clamp(-1, 1)
    noise = torch.randn(3, 4, 4, 4, generator=seeded)
    t = torch.tensor([5, 100, 900])
    xt = diffusion.q_sample(x0, t, noise)
    out = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    losses = diffusion.training_losses(out, x0, xt, noise, t)
    assert torch.all(losses["mse"] == 0)
    torch.testing.assert_close(losses["vb"], torch.zeros(3), atol=1e-4, rtol=0)


def test_vlb_trains_only_the_variance_channels(diffusion, seeded):
    x0 = torch.randn(2, 4, 4, 4, generator=seeded)
    noise = torch.randn(2, 4, 4, 4, generator=seeded)
    t = torch.tensor([0, 400])
    xt = diffusion.q_sample(x0, t, noise)
    out = torch.randn(2, 8, 4, 4, generator=seeded, requires_grad=True)
    diffusion.training_losses(out, x0, xt, noise, t)["vb"].sum().backward()
    assert torch.all(out.grad[:, :4] == 0) and out.grad[:, 4:].abs().sum() > 0


def test_t0_uses_the_decoder_likelihood(diffusion, seeded):
    x0 = torch.rand(1, 4, 2, 2, generator=seeded) * 2 - 1
    xt = diffusion.q_sample(x0, torch.tensor([0]), torch.randn(1, 4, 2, 2, generator=seeded))
    out = torch.cat([torch.randn(1, 4, 2, 2, generator=seeded), torch.zeros(1, 4, 2, 2)], dim=1)
    mean, log_var, _ = diffusion.p_mean_log_variance(out, xt, torch.tensor([0]))
    expected = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).mean() / math.log(2)
    torch.testing.assert_close(diffusion.vb_terms_bpd(out, x0, xt, torch.tensor([0])), expected.reshape(1))


def test_min_snr_weight_matches_diffusers_compute_snr(diffusion, seeded):
    """min(SNR, γ)/SNR with diffusers' own SNR (its training scripts' `snr_gamma`); 1 at high noise."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    t = torch.tensor([0, 10, 50, 100, 200, 500, 999])
    snr = compute_snr(sched, t)
    # diffusers computes SNR in float32, we in float64: 1 - ᾱ at t = 0 differs in the 4th digit
    torch.testing.assert_close(diffusion.snr_weight(t, 5.0), snr.clamp(max=5.0) / snr, rtol=1e-3, atol=0)
    assert diffusion.snr_weight(t, 5.0)[-3:].eq(1).all() and diffusion.snr_weight(t, 5.0)[0] < 0.001

    x0, noise = torch.randn(7, 4, 2, 2, generator=seeded), torch.randn(7, 4, 2, 2, generator=seeded)
    xt = diffusion.q_sample(x0, t, noise)
    out = torch.randn(7, 8, 2, 2, generator=seeded)
    plain = diffusion.training_losses(out, x0, xt, noise, t)
    weighted = diffusion.training_losses(out, x0, xt, noise, t, snr_gamma=5.0)
    torch.testing.assert_close(weighted["mse"], plain["mse"])
    torch.testing.assert_close(weighted["vb"], plain["vb"])
    w = diffusion.snr_weight(t, 5.0)
    torch.testing.assert_close(weighted["loss"], plain["mse"] * w + plain["vb"])
    assert not torch.allclose(weighted["loss"], plain["loss"])


def test_v_target_is_diffusers_velocity_and_gives_back_the_noise(diffusion, seeded):
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    x0, noise = torch.randn(4, 4, 2, 2, generator=seeded), torch.randn(4, 4, 2, 2, generator=seeded)
    t = torch.tensor([0, 300, 700, 999])
    v = diffusion.velocity(x0, noise, t)
    torch.testing.assert_close(v, sched.get_velocity(x0, noise, t), rtol=1e-4, atol=1e-5)
    xt = diffusion.q_sample(x0, t, noise)
    torch.testing.assert_close(diffusion.eps_from_v(v, xt, t), noise, rtol=1e-4, atol=1e-5)


def test_v_prediction_loss_perfect_model_and_weights(diffusion, seeded):
    """A perfect v gives mse 0 and the same VLB as a perfect ε; min-SNR for v is min(SNR, γ) / (SNR + 1)."""
    from diffusers.training_utils import compute_snr

    x0 = torch.randn(3, 4, 4, 4, generator=seeded).clamp(-1, 1)
    noise = torch.randn(3, 4, 4, 4, generator=seeded)
    t = torch.tensor([5, 100, 900])
    xt = diffusion.q_sample(x0, t, noise)
    var = torch.randn(3, 4, 4, 4, generator=seeded)
    as_v = diffusion.training_losses(torch.cat([diffusion.velocity(x0, noise, t), var], 1), x0, xt, noise, t,
                                     prediction="v")  # fmt: skip
    as_eps = diffusion.training_losses(torch.cat([noise, var], 1), x0, xt, noise, t)
    torch.testing.assert_close(as_v["mse"], torch.zeros(3), atol=1e-10, rtol=0)
    torch.testing.assert_close(as_v["vb"], as_eps["vb"], rtol=1e-3, atol=1e-5)

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    steps = torch.tensor([0, 50, 500, 999])
    snr = compute_snr(sched, steps)
    torch.testing.assert_close(
        diffusion.snr_weight(steps, 5.0, "v"), snr.clamp(max=5.0) / (snr + 1), rtol=1e-3, atol=0
    )
    out = torch.randn(4, 8, 2, 2, generator=seeded)
    x0, noise = torch.randn(4, 4, 2, 2, generator=seeded), torch.randn(4, 4, 2, 2, generator=seeded)
    xt = diffusion.q_sample(x0, steps, noise)
    plain = diffusion.training_losses(out, x0, xt, noise, steps, prediction="v")
    weighted = diffusion.training_losses(out, x0, xt, noise, steps, prediction="v", snr_gamma=5.0)
    torch.testing.assert_close(weighted["loss"], plain["mse"] * diffusion.snr_weight(steps, 5.0, "v") + plain["vb"])
    with pytest.raises(ValueError, match="prediction='x0'"):
        diffusion.training_losses(out, x0, xt, noise, steps, prediction="x0")


def test_foreground_weights_mark_an_object_and_its_outline_not_the_background():
    """A flat background and one 2x2 object: the object and the cells around it (the 3x3 margin) weigh 1 + w,
    everything else 1; a border ripple counts only when it is further from the background than the threshold."""
    from pixart.diffusion.losses import foreground_weights

    x0 = torch.full((2, 4, 8, 8), 0.5)
    x0[0, :, 0, :] += 1.5  # image 1: a border row 1.5 off in each channel, 3 in L2: above a threshold of 2
    x0[:, :, 4:6, 4:6] = torch.tensor([3.0, -2.0, 1.0, 0.0])[:, None, None]
    w = foreground_weights(x0, 4.0, threshold=2.0)
    assert w.shape == (2, 1, 8, 8)
    expected = torch.ones(8, 8)
    expected[3:7, 3:7] = 5.0
    torch.testing.assert_close(w[1, 0], expected)  # image 2: the object and its margin only
    assert w[0, 0, :2].eq(5.0).all()  # image 1: the loud border row counts too, as any object would
    # A threshold above the ripple's distance (3) ignores it.
    torch.testing.assert_close(foreground_weights(x0, 4.0, threshold=3.5)[0, 0], expected)


def test_weighted_mse_is_a_weighted_mean_and_uniform_weights_change_nothing(diffusion, seeded):
    t = torch.tensor([10, 500, 990])
    x0, noise = torch.randn(3, 4, 4, 4, generator=seeded), torch.randn(3, 4, 4, 4, generator=seeded)
    xt = diffusion.q_sample(x0, t, noise)
    out = torch.randn(3, 8, 4, 4, generator=seeded)
    plain = diffusion.training_losses(out, x0, xt, noise, t, prediction="v")
    uniform = diffusion.training_losses(out, x0, xt, noise, t, prediction="v", weights=torch.full((3, 1, 4, 4), 3.0))
    torch.testing.assert_close(uniform["loss"], plain["loss"])
    # All weight on one cell: the loss's MSE part is that cell's squared error, averaged over channels.
    w = torch.zeros(3, 1, 4, 4)
    w[:, :, 1, 2] = 1.0
    one = diffusion.training_losses(out, x0, xt, noise, t, prediction="v", weights=w)
    err = (diffusion.velocity(x0, noise, t) - out[:, :4]) ** 2
    torch.testing.assert_close(one["loss"], err[:, :, 1, 2].mean(dim=1) + plain["vb"])
    torch.testing.assert_close(one["mse"], plain["mse"])  # the logged MSE stays unweighted
