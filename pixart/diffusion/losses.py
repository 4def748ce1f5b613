"""The training objective: IDDPM's hybrid loss with a learned-range variance (Nichol & Dhariwal 2021).

PixArt trains with 1000 linear-beta steps, uniform t, ε-prediction MSE plus the variational bound term for
the variance, where the VLB sees the predicted mean *detached* so it trains only the variance channels
(REFERENCE.md §1.8). Written by hand because no maintained library ships this loss: diffusers' schedulers
sample with a learned variance but do not train it.

    loss = mean((ε - ε̂)²) + L_vlb(t)          L_vlb(t) = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))   t > 0
                                                         = -log p(x_0|x_1) (discretised Gaussian)     t = 0
L_vlb is in bits per dimension, as the reference.

Optional, off by default: min-SNR-γ weighting of the MSE term (Hang et al. 2023, "Efficient Diffusion Training
via Min-SNR Weighting Strategy"; diffusers' training scripts call it `snr_gamma`). For ε-prediction the weight
is min(SNR(t), γ) / SNR(t), SNR = ᾱ/(1 - ᾱ): 1 where SNR <= γ, smaller at the low-noise steps whose large,
caption-blind gradients otherwise dominate the update. The VLB term is left unweighted.

Optional, off by default: foreground weighting of the MSE term (`foreground_weights`). On images with a flat
background, most of the MSE comes from background latent cells, and a small object's few cells move the loss
almost nothing; weighting the cells near whatever differs from the image's background by 1 + w (the others by 1)
gives a small object's detail the share of the gradient a large one gets. It needs no labels: the background is the
clean latent's per-channel median. Written here because no library loss does it.

`prediction="v"` trains the first C channels to predict v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x_0 instead of ε (Salimans &
Ho 2022): at high noise its target is the clean image itself, where ε-prediction has to copy its noisy input
almost exactly (docs/demo-model.md shows what that costs a small model). The MSE is taken on v, its min-SNR
weight is min(SNR, γ) / (SNR + 1), and the VLB term sees the ε that v implies, ε = sqrt(ᾱ) v + sqrt(1 - ᾱ) x_t.
Training takes it from the model's config (`ModelConfig.prediction`); samplers get it as the scheduler's
`prediction_type` (`Text2Image.sampling_schedule`), which every diffusers scheduler we use understands.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

# ---- distributions ------------------------------------------------------------------------------------------------


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Φ(x) by the tanh approximation used by the reference (exact to ~1e-3)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(x) of data in [-1, 1] quantised to 256 bins under N(means, e^(2 log_scales)), elementwise.

    The edge bins extend to ±infinity (DDPM §3.3).
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all but the batch dimension: (B, ...) -> (B,)."""
    return x.mean(dim=tuple(range(1, x.dim())))


def foreground_weights(x0: Tensor, weight: float, threshold: float = 2.0) -> Tensor:
    """(B, 1, H, W) loss weights: 1 + `weight` on the foreground, 1 elsewhere.

    A latent cell is foreground when it lies within one cell (3x3 neighbourhood) of a cell whose clean latent is
    more than `threshold` (L2 over channels) from the image's per-channel median, the background on images that
    are mostly one flat colour. The margin takes in an object's outline, whose cells differ less; `threshold`
    keeps out the slight ripple a VAE leaves along the image border.
    """
    background = x0.flatten(2).median(dim=2).values[:, :, None, None]  # (B, C, 1, 1)
    far = ((x0 - background).norm(dim=1, keepdim=True) > threshold).to(x0.dtype)  # (B, 1, H, W)
    near = torch.nn.functional.max_pool2d(far, kernel_size=3, stride=1, padding=1)  # (B, 1, H, W)
    return 1.0 + weight * near


# ---- the diffusion process ------------------------------------------------------------------------------------------


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM's linear schedule, rescaled so any step count spans the same process (float64)."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)


@dataclass(frozen=True)
class GaussianDiffusion:
    """Precomputed float64 tables of a discrete Gaussian diffusion; methods gather them at t (B,)."""

    betas: Tensor

    @classmethod
    def linear(cls, num_timesteps: int = 1000) -> GaussianDiffusion:
        return cls(linear_betas(num_timesteps))

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    @functools.cached_property
    def tables(self) -> dict[str, Tensor]:
        betas = self.betas
        acp = torch.cumprod(1.0 - betas, dim=0)
        acp_prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
        post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
        return {
            "sqrt_acp": acp.sqrt(),
            "sqrt_one_minus_acp": (1.0 - acp).sqrt(),
            "sqrt_recip_acp": (1.0 / acp).sqrt(),
            "sqrt_recipm1_acp": (1.0 / acp - 1.0).sqrt(),
            "posterior_variance": post_var,
            # log(0) at t = 0 is replaced by the t = 1 value, as the reference ("clipped").
            "posterior_log_variance_clipped": torch.log(torch.cat([post_var[1:2], post_var[1:]])),
            "posterior_mean_coef1": betas * acp_prev.sqrt() / (1.0 - acp),
            "posterior_mean_coef2": (1.0 - acp_prev) * (1.0 - betas).sqrt() / (1.0 - acp),
            "log_betas": torch.log(betas),
        }

    def at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Table `name` at timesteps t (B,), shaped (B, 1, 1, ...) to broadcast against `like`."""
        values = self.tables[name][t.cpu().long()].to(device=like.device, dtype=like.dtype)
        return values.reshape(-1, *([1] * (like.dim() - 1)))

    # ---- q: the forward process ----

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε."""
        return self.at("sqrt_acp", t, x0) * x0 + self.at("sqrt_one_minus_acp", t, x0) * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self.at("posterior_mean_coef1", t, xt) * x0 + self.at("posterior_mean_coef2", t, xt) * xt
        return mean, self.at("posterior_variance", t, xt), self.at("posterior_log_variance_clipped", t, xt)

    # ---- p: the model's reverse step ----

    def p_mean_log_variance(self, model_output: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(mean, log-variance, predicted x_0) of p(x_{t-1} | x_t) from ε and learned-range values (B, 2C, ...).

        The variance interpolates in log space between the posterior variance (v = -1) and β_t (v = 1).
        """
        eps, v = model_output.chunk(2, dim=1)
        min_log = self.at("posterior_log_variance_clipped", t, xt)
        max_log = self.at("log_betas", t, xt)
        frac = (v + 1.0) / 2.0
        log_variance = frac * max_log + (1.0 - frac) * min_log
        pred_x0 = self.at("sqrt_recip_acp", t, xt) * xt - self.at("sqrt_recipm1_acp", t, xt) * eps
        mean, _, _ = self.q_posterior(pred_x0, xt, t)
        return mean, log_variance, pred_x0

    def vb_terms_bpd(self, model_output: Tensor, x0: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """The VLB term of each sample in bits/dim: KL for t > 0, decoder NLL for t = 0. (B,)."""
        true_mean, _, true_log_var = self.q_posterior(x0, xt, t)
        mean, log_var, _ = self.p_mean_log_variance(model_output, xt, t)
        kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl)

    def snr_weight(self, t: Tensor, gamma: float, prediction: str = "epsilon") -> Tensor:
        """The min-SNR-γ weight of the MSE for integer timesteps t (B,), (B,) float32: min(SNR, γ) / SNR for ε,
        min(SNR, γ) / (SNR + 1) for v."""
        snr = self.tables["sqrt_recipm1_acp"][t.cpu().long()] ** -2  # ᾱ / (1 - ᾱ), from the cached tables
        return (snr.clamp(max=gamma) / (snr + 1 if prediction == "v" else snr)).float().to(t.device)

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0, the v-prediction target."""
        return self.at("sqrt_acp", t, x0) * noise - self.at("sqrt_one_minus_acp", t, x0) * x0

    def eps_from_v(self, v: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """ε = sqrt(ᾱ_t) v + sqrt(1 - ᾱ_t) x_t: the noise a v-prediction implies."""
        return self.at("sqrt_acp", t, xt) * v + self.at("sqrt_one_minus_acp", t, xt) * xt

    def eps_from_output(self, prediction_out: Tensor, xt: Tensor, t: Tensor, prediction: str) -> Tensor:
        """The ε a model's prediction channels (B, C, ...) stand for, whatever its `prediction` target."""
        return prediction_out if prediction == "epsilon" else self.eps_from_v(prediction_out, xt, t)

    def training_losses(
        self,
        model_output: Tensor,
        x0: Tensor,
        xt: Tensor,
        noise: Tensor,
        t: Tensor,
        *,
        snr_gamma: float = 0.0,
        prediction: str = "epsilon",
        weights: Tensor | None = None,
    ) -> dict:
        """PixArt's hybrid loss per sample: {"loss", "mse", "vb"} each (B,).

        Args:
            model_output: (B, 2C, H, W) the prediction and learned-range values, or (B, C, H, W) the prediction
                only (then vb = 0).
            x0, xt, noise: (B, C, H, W) clean latents, noised latents, the noise used.
            t: (B,) integer timesteps.
            snr_gamma: > 0 weights the MSE in "loss" by min-SNR-γ; "mse" stays unweighted. 0: the reference.
            prediction: "epsilon" (the reference) or "v"; "mse" is on that target.
            weights: (B, 1, H, W) per-cell weights of the MSE in "loss" (`foreground_weights`), a weighted mean
                (sum of w * err / sum of w), so its scale stays the MSE's; "mse" stays unweighted. None: uniform.
        """
        if prediction not in ("epsilon", "v"):
            raise ValueError(f"prediction={prediction!r}: allowed are epsilon, v")
        c = x0.shape[1]
        pred = model_output[:, :c]
        target = noise if prediction == "epsilon" else self.velocity(x0, noise, t)
        err = (target - pred) ** 2
        mse = mean_flat(err)
        if weights is None:
            fitted = mse
        else:
            weights = weights.to(err).expand_as(err)
            fitted = mean_flat(weights * err) / mean_flat(weights)
        if model_output.shape[1] == 2 * c:
            # The VLB trains only the variance: the mean it sees is detached (IDDPM §3.1).
            eps = self.eps_from_output(pred, xt, t, prediction)
            frozen = torch.cat([eps.detach(), model_output[:, c:]], dim=1)
            vb = self.vb_terms_bpd(frozen, x0, xt, t)
        else:
            vb = torch.zeros_like(mse)
        weighted = fitted * self.snr_weight(t, snr_gamma, prediction).to(mse) if snr_gamma > 0 else fitted
        return {"loss": weighted + vb, "mse": mse, "vb": vb}
