"""Diffusion: the noise schedule, named samplers (diffusers schedulers), the guided denoiser, sampling loops.

`pixart.diffusion.schedules` imports no torch, so the CLI can list samplers instantly; the torch-heavy names
are imported on first use.
"""

from pixart.diffusion.schedules import (
    NOISE_SCHEDULE,
    SAMPLERS,
    SamplerSpec,
    get_sampler,
    make_scheduler,
    noise_schedule,
    read_noise_schedule,
)

_LAZY = {
    "CFG_SEMANTICS": "pixart.diffusion.denoiser",
    "Conditioning": "pixart.diffusion.denoiser",
    "make_denoiser": "pixart.diffusion.denoiser",
    "generators_for": "pixart.diffusion.samplers",
    "initial_noise": "pixart.diffusion.samplers",
    "sample": "pixart.diffusion.samplers",
}

__all__ = [
    "NOISE_SCHEDULE",
    "SAMPLERS",
    "SamplerSpec",
    "get_sampler",
    "make_scheduler",
    "noise_schedule",
    "read_noise_schedule",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pixart.diffusion' has no attribute {name!r}")
