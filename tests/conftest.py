"""Shared test helpers: determinism, tiny configs, and a diffusers reference built from our weights."""

from __future__ import annotations

import pytest
import torch

from pixart.config import ModelConfig

# One thread: the tests' tensors are tiny, and on 2 shared cores threading costs more than it gains.
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def tiny_config(**changes) -> ModelConfig:
    """A 2-block, 48-wide model on 8x8 latents with 16-d captions: milliseconds per forward."""
    base = ModelConfig(
        depth=2, hidden_size=48, num_heads=3, caption_channels=16, max_tokens=8, sample_size=8, pe_interpolation=1.0
    )
    return base.replace(**changes)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter and buffer with random values, so zero-initialised layers are exercised too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                # Weights scaled by fan-in keep activations O(1) at any width, as in a trained model.
                fan_in = tensor[0].numel() if tensor.dim() >= 2 else 1
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * (0.5 / fan_in**0.5 if fan_in > 1 else 0.3))
    return model


def make_diffusers_reference(model, cfg: ModelConfig):
    """diffusers' PixArtTransformer2DModel holding exactly `model`'s weights, through our converter."""
    from diffusers import PixArtTransformer2DModel

    from pixart.convert import config_to_diffusers, ours_to_diffusers

    dcfg = {k: v for k, v in config_to_diffusers(cfg).items() if not k.startswith(("_", "kv_"))}
    ref = PixArtTransformer2DModel(**dcfg).eval()
    sd = ours_to_diffusers(model.state_dict(), cfg)
    sd.pop("caption_projection.y_embedding", None)
    ref.load_state_dict(sd, strict=True)
    return ref


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)
