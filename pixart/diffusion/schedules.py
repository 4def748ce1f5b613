"""Noise schedule and the samplers by name: each sampler is a diffusers scheduler with PixArt-Σ's settings.

PixArt-Σ was trained with the DDPM linear schedule (betas 1e-4 .. 0.02 over 1000 steps, ε prediction,
REFERENCE.md §1.8); every sampler here integrates that same process, so they differ only in how they step. A model
trained to predict v instead (`ModelConfig.prediction`) gets the same schedulers with `prediction_type` set to
"v_prediction" (`Text2Image.sampling_schedule`).
The defaults per sampler are the reference's (REFERENCE.md §1.6, §2.2):

  name          scheduler                                 steps  CFG  notes
  dpm-solver++  DPMSolverMultistepScheduler, order 2      20     4.5  the hub config; deterministic
  sa-solver     SASolverScheduler, data prediction, 2/2   25     3.0  stochastic (tau = 1 for t in [200, 800])
  ddim          DDIMScheduler, eta 0, no clipping         50     4.5  deterministic
  euler         EulerDiscreteScheduler                    30     4.5  deterministic
  iddpm         DDPMScheduler, learned-range variance     100    4.5  ancestral; uses the model's variance output

We use diffusers' schedulers instead of re-deriving the solvers: they are tested upstream, and the
diffusers PixArtSigmaPipeline uses the very same objects, which makes end-to-end parity checkable.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# The noise schedule as in the released pipelines' scheduler_config.json.
NOISE_SCHEDULE: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "linspace",
}
_SCHEDULE_KEYS = (*NOISE_SCHEDULE, "trained_betas", "steps_offset")


@dataclass(frozen=True)
class SamplerSpec:
    """Defaults of one named sampler."""

    name: str
    steps: int
    cfg: float
    stochastic: bool  # draws fresh noise while sampling (uses the generators)
    description: str


SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("dpm-solver++", 20, 4.5, False, "DPM-Solver++(2M), Lu et al. 2022 (default)"),
        SamplerSpec("sa-solver", 25, 3.0, True, "SA-Solver, Xue et al. 2023 (stochastic Adams)"),
        SamplerSpec("ddim", 50, 4.5, False, "DDIM, Song et al. 2021 (eta = 0)"),
        SamplerSpec("euler", 30, 4.5, False, "Euler on the probability-flow ODE, Karras et al. 2022"),
        SamplerSpec("iddpm", 100, 4.5, True, "ancestral DDPM with learned variance, Nichol & Dhariwal 2021"),
    )
}


def get_sampler(name: str) -> SamplerSpec:
    """The spec of a sampler by name; a clear error lists the known ones."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}") from None


def noise_schedule(config: dict | None = None) -> dict:
    """The noise-schedule fields of a scheduler config, on top of PixArt-Σ's defaults.

    A published pipeline folder carries `scheduler/scheduler_config.json`; its schedule (betas, number of
    training steps, prediction type, spacing) is kept whatever sampler is then chosen.
    """
    schedule = dict(NOISE_SCHEDULE)
    for key in _SCHEDULE_KEYS:
        if config and config.get(key) is not None:
            schedule[key] = config[key]
    return schedule


def read_noise_schedule(folder: str | Path) -> dict:
    """`noise_schedule()` of a `scheduler_config.json` in `folder`, or the defaults if there is none."""
    path = Path(folder) / "scheduler_config.json"
    if not path.is_file():
        return noise_schedule()
    try:
        return noise_schedule(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def make_scheduler(name: str, schedule: dict | None = None, *, learned_variance: bool = True):
    """A fresh diffusers scheduler for sampler `name` with the given noise schedule.

    Args:
        name: one of `SAMPLERS`.
        schedule: noise-schedule fields (see `noise_schedule`); PixArt-Σ's when None.
        learned_variance: the model predicts variance values (only `iddpm` uses them).
    """
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        SASolverScheduler,
    )

    get_sampler(name)
    config = noise_schedule(schedule)
    if name == "dpm-solver++":
        return DPMSolverMultistepScheduler(
            **config, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True
        )
    if name == "sa-solver":
        # The official app's settings; tau_func=None is diffusers' default, 1 for 200 <= t <= 800 else 0.
        return SASolverScheduler(
            **config, algorithm_type="data_prediction", predictor_order=2, corrector_order=2, tau_func=None
        )
    if name == "ddim":
        # Latents are not confined to [-1, 1]: no x0 clipping (diffusers' default would clip).
        return DDIMScheduler(**config, clip_sample=False, set_alpha_to_one=True)
    if name == "euler":
        return EulerDiscreteScheduler(**config)
    # iddpm: the official sampler is p_sample_loop with clip_denoised=False and learned-range variance.
    variance = "learned_range" if learned_variance else "fixed_small"
    return DDPMScheduler(**config, variance_type=variance, clip_sample=False)
