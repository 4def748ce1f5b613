"""Sampling loops: the initial noise, and one generic loop that drives any named sampler.

Every sampler is a pure function of (denoiser, noise, steps, generators): the diffusers scheduler that does
the stepping is created fresh inside the call, so no state leaks between calls.

Reproducibility rule: each image of a batch owns a `torch.Generator`. Its initial noise is drawn from its
own generator (on the CPU, in float32, whatever the device and dtype), and stochastic samplers draw that
image's per-step noise from the same generator. So image i of a batch is bit-for-bit the image a batch of
one gives with generator i; `pixart generate` seeds generator i with `seed + i`. A single generator for the
whole batch is accepted too: it draws the batch's noise in one call, as diffusers' `randn_tensor` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pixart.diffusion.denoiser import Denoiser
from pixart.diffusion.schedules import make_scheduler

Generators = torch.Generator | Sequence[torch.Generator] | None
StepCallback = Callable[[int, int, Tensor], None]


def generators_for(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image, seeded with `seeds[i]`."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def initial_noise(
    shape: tuple[int, ...],
    generators: Generators = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal latents (B, C, H, W), drawn on the CPU in float32 then moved to `device`/`dtype`.

    With a list of generators, image i is drawn from generators[i] alone (see the module docstring).
    """
    if isinstance(generators, Sequence) and not isinstance(generators, torch.Generator):
        if len(generators) != shape[0]:
            raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}: pass one per image")
        noise = torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32) for g in generators])
    else:
        noise = torch.randn(shape, generator=generators, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


def sample(
    denoise: Denoiser,
    noise: Tensor,
    sampler: str,
    steps: int,
    *,
    schedule: dict | None = None,
    learned_variance: bool = False,
    generators: Generators = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Integrate from pure noise to clean latents with the named sampler.

    Args:
        denoise: `denoise(x, t) -> ε` (or ε and variance values for `iddpm`), see `make_denoiser`.
        noise: (B, C, H, W) standard normal latents (`initial_noise`); scaled here by the sampler's σ_max.
        sampler: a name from `pixart.diffusion.SAMPLERS`.
        steps: number of denoiser evaluations per image (each is two forwards with guidance).
        schedule: noise-schedule fields (`pixart.diffusion.noise_schedule`); PixArt-Σ's when None.
        learned_variance: `denoise` returns variance values too (iddpm then samples with them).
        generators: for stochastic samplers, the per-image generators (or one for the batch).
        callback: called after each step as `callback(index, timestep, latents)`.

    Returns:
        (B, C, H, W) float32 latents at t = 0.
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: must be >= 1")
    scheduler = make_scheduler(sampler, schedule, learned_variance=learned_variance)
    scheduler.set_timesteps(steps, device=noise.device)
    if isinstance(generators, Sequence) and not isinstance(generators, torch.Generator):
        generators = list(generators)  # diffusers' randn_tensor draws per image from a list
    x = noise.float() * scheduler.init_noise_sigma  # (B, C, H, W)
    for i, t in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(x, t)  # identity except for sigma-parameterised samplers
        out = denoise(model_in, t)  # (B, C or 2C, H, W)
        x = scheduler.step(out, t, x, generator=generators, return_dict=False)[0]  # (B, C, H, W)
        if callback is not None:
            callback(i, int(t), x)
    return x
