"""The image autoencoder: diffusers' `AutoencoderKL` (SDXL's VAE for PixArt-Σ), decode with optional tiling.

Latents are scaled by the VAE's `scaling_factor` (SDXL: 0.13025; REFERENCE.md §1.6): the transformer works
on `z * scaling_factor`, so decoding divides by it first. Folders whose config lacks the field get SDXL's
value, not AutoencoderKL's class default (SD 1.5's 0.18215).

Large images are decoded in overlapping tiles (diffusers' tiled decoder, blended over 25% overlaps): the
decoder's activations cost ~4 KB per output pixel in float32 (measured for the SDXL architecture), i.e.
~40 GB for an untiled 3840x2560 decode, but only ~4 GB per 1024 px tile. Tiling costs ~1.5x the decode time
and differs slightly from untiled output (GroupNorm statistics are per tile, overlaps are cross-faded), so
by default it is used only when an untiled decode would not fit in the free memory (`pixart.memory`).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import torch
from torch import Tensor

from pixart.memory import decode_fits

logger = logging.getLogger(__name__)

SDXL_SCALING_FACTOR = 0.13025
# Devices where the decoder's convolutions run faster on channels-last (NHWC) memory: measured on CPU (oneDNN),
# 10% less decode time for the SDXL architecture at 512², outputs equal to NCHW within 7e-5; cuDNN prefers it too.
CHANNELS_LAST_DEVICES = ("cpu", "cuda")


def resolve_vae_folder(path: str | Path) -> Path:
    """The VAE folder itself, given it or a pipeline folder that has a vae/ subfolder."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"VAE folder {str(path)!r} does not exist")
    if (path / "vae").is_dir():
        path = path / "vae"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"VAE folder {str(path)!r} has no config.json")
    return path


class VAE:
    """An `AutoencoderKL` with its latent scaling factor and a decode that tiles large images."""

    def __init__(self, model: torch.nn.Module, scaling_factor: float | None = None):
        self.model = model.eval()
        if self.device.type in CHANNELS_LAST_DEVICES:
            self.model.to(memory_format=torch.channels_last)
        self._decode_lock = threading.Lock()
        config = model.config
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else config.scaling_factor)
        self.spatial_factor = 2 ** (len(config.block_out_channels) - 1)  # 8 for SDXL's VAE
        self.latent_channels = int(config.latent_channels)
        sample = config.sample_size
        self.default_tile = int(sample[0] if isinstance(sample, (list, tuple)) else sample)  # 1024 for SDXL

    @classmethod
    def from_folder(
        cls, path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> VAE:
        """Load from a VAE folder (config.json + weights) or a pipeline folder with vae/.

        SDXL's VAE overflows in float16 (its config says `force_upcast`), so it then stays in float32.
        """
        from diffusers import AutoencoderKL

        folder = resolve_vae_folder(path)
        raw = json.loads((folder / "config.json").read_text())
        if dtype == torch.float16 and raw.get("force_upcast", False):
            logger.info("VAE config asks for force_upcast: decoding in float32")
            dtype = torch.float32
        model = AutoencoderKL.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
        return cls(model.to(device), raw.get("scaling_factor", SDXL_SCALING_FACTOR))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str) -> VAE:
        self.model.to(device)
        fmt = torch.channels_last if self.device.type in CHANNELS_LAST_DEVICES else torch.contiguous_format
        self.model.to(memory_format=fmt)
        return self

    def should_tile(self, height: int, width: int) -> bool:
        """Whether `decode(tile=None)` tiles an image of this size: when an untiled decode would not fit."""
        if max(height, width) <= self.default_tile:
            return False  # one tile anyway
        return not decode_fits(height, width, str(self.device), vae_dtype_bytes=self.dtype.itemsize)

    @torch.no_grad()
    def decode(
        self, latents: Tensor, *, tile: bool | None = None, tile_size: int | None = None, overlap: float = 0.25
    ) -> Tensor:
        """Scaled latents (B, C, h, w) -> images (B, 3, h*f, w*f) in [-1, 1], float32, one image at a time.

        Args:
            tile: True/False to force; None tiles when an untiled decode would not fit in memory.
            tile_size: tile side in pixels (a multiple of the spatial factor); the VAE's sample size by default.
            overlap: fraction of a tile shared with its neighbour, cross-faded.
        """
        f = self.spatial_factor
        height, width = latents.shape[-2] * f, latents.shape[-1] * f
        tile = self.should_tile(height, width) if tile is None else tile
        size = tile_size or self.default_tile
        if tile and (size % f or size < 2 * f or not 0.0 < overlap < 1.0):
            raise ValueError(f"tile_size={size} must be a multiple of {f} (>= {2 * f}) and overlap in (0, 1)")
        m = self.model
        images = []
        with self._decode_lock:  # the tiling fields live on the shared diffusers model (pixart serve decodes
            m.use_tiling = bool(tile)  # from several threads)
            m.tile_sample_min_size, m.tile_latent_min_size, m.tile_overlap_factor = size, size // f, overlap
            for z in latents.split(1):  # one at a time: decode memory does not grow with the batch
                z = z.to(self.device, self.dtype) / self.scaling_factor  # (1, C, h, w)
                if self.device.type in CHANNELS_LAST_DEVICES:
                    z = z.contiguous(memory_format=torch.channels_last)
                images.append(m.decode(z, return_dict=False)[0].float().contiguous())  # (1, 3, H, W)
        return torch.cat(images)
