"""The PixArt-Σ transformer, written in plain PyTorch (no xformers, timm or mmcv)."""

from pixart.model.transformer import PixArtSigma

__all__ = ["PixArtSigma"]
