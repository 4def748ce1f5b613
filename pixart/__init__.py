"""pixart-sigma: a pure-PyTorch implementation of PixArt-Σ (text-to-image Diffusion Transformer up to 4K)."""

from pixart.config import PRESETS, ModelConfig, get_preset

__version__ = "0.1.0"

__all__ = ["PRESETS", "ModelConfig", "PixArtSigma", "get_preset", "load_transformer", "save_transformer"]


def __getattr__(name: str):
    # Import torch-heavy modules only when used, so `import pixart` and `pixart --help` stay fast.
    if name == "PixArtSigma":
        from pixart.model import PixArtSigma

        return PixArtSigma
    if name in ("load_transformer", "save_transformer"):
        from pixart import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'pixart' has no attribute {name!r}")
