"""Peak-memory estimate for one generation, checked against what the device has before any work starts.

Generation runs in three stages that never overlap in memory when the text encoder is freed after use:
encode (T5 weights), denoise (transformer weights + activations), decode (VAE weights + decoder activations,
the transformer still resident). The estimate is the largest stage. Constants were measured on CPU in
float32 with the released architectures (full-width transformer, SDXL VAE) and scale with the dtype:

- transformer activations: ~12 x batch x tokens x hidden x bytes per element at the widest point of a block
  (MLP hidden + residual + attention in/out), where batch doubles with classifier-free guidance;
- attention matrices: none on CPU/CUDA, where `scaled_dot_product_attention` uses flash or memory-efficient
  kernels (checked on CPU at 38,400 tokens: output-sized memory only); on MPS we assume the math path,
  batch x heads x N x N_kv x bytes;
- VAE decode: ~4 KB per output pixel in float32, per tile when tiled. Automatic tiling (`decode_fits`) tiles
  only when the untiled decode would take more than 80% of the free memory: tiles cost ~1.5x the decode time.

It is an estimate: it refuses only when the expected peak is over what is free, with flags that would help.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

GiB = 1024**3
ACTIVATION_FACTOR = 12
DECODE_BYTES_PER_PIXEL_FP32 = 4096
OVERHEAD_BYTES = 512 * 1024**2  # interpreter, torch, allocator slack
AUTO_TILE_FRACTION = 0.8  # untiled decode allowed up to this share of the free memory


class InsufficientMemoryError(ValueError):
    """The estimated peak exceeds the memory available; the message names flags that would help."""


# ---- what is there ----------------------------------------------------------------------------------------------


def available_memory(device: str) -> int:
    """Bytes free for new allocations on `device` ("cpu", "cuda[:i]", "mps")."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return system_available_memory()  # CPU, and MPS's unified memory


def system_available_memory() -> int:
    """MemAvailable from /proc/meminfo, else physical memory from sysconf (macOS)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def count_parameters(folder: str | Path) -> int:
    """Parameters stored in a model folder's weights, from safetensors headers (no data read).

    Folders with only PyTorch `.bin` files are counted from file size, assuming 4 bytes per parameter.
    """
    from pixart.checkpoint_io import read_safetensors

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if files:
        # A folder may hold one precision twice (model.safetensors + model.fp16.safetensors): count one variant.
        plain = [f for f in files if len(f.name.split(".")) == 2] or files
        total = 0
        for f in plain:
            tensors, _ = read_safetensors(f, meta=True)
            total += sum(t.numel() for t in tensors.values())
        return total
    return sum(f.stat().st_size for f in folder.glob("*.bin")) // 4


def decode_bytes(height: int, width: int, *, vae_dtype_bytes: int = 4, tile: int | None = None, batch: int = 1) -> int:
    """Activation bytes of decoding `batch` images one at a time, untiled or in `tile`-pixel tiles."""
    pixels = min(height * width, tile * tile) if tile else height * width
    return DECODE_BYTES_PER_PIXEL_FP32 * vae_dtype_bytes // 4 * pixels + 2 * batch * 3 * height * width * 4


def decode_fits(height: int, width: int, device: str, *, vae_dtype_bytes: int = 4) -> bool:
    """Whether an untiled decode fits comfortably in the memory free on `device` right now."""
    need = decode_bytes(height, width, vae_dtype_bytes=vae_dtype_bytes)
    return need <= AUTO_TILE_FRACTION * available_memory(device)


# ---- the estimate -------------------------------------------------------------------------------------------------


@dataclass
class MemoryEstimate:
    """Bytes per stage on one device, what is available there, and what would lower the peak."""

    device: str
    stages: dict[str, int]
    available: int
    hints: dict[str, list[str]] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.stages.values(), default=0)

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=self.stages.get) if self.stages else ""

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GiB:.1f} GiB" for k, v in self.stages.items())
        peak, free = self.peak / GiB, self.available / GiB
        return f"estimated peak {peak:.1f} GiB on {self.device} ({parts}); available {free:.1f} GiB"

    def check(self) -> None:
        """Raise `InsufficientMemoryError` when the peak exceeds the available memory."""
        logger.info("%s", self.describe())
        if self.peak <= self.available:
            return
        stage = self.peak_stage
        hints = self.hints.get(stage, []) + ["--skip-memory-check to try anyway"]
        raise InsufficientMemoryError(
            f"not enough memory: {stage} needs about {self.peak / GiB:.1f} GiB but {self.device} has "
            f"{self.available / GiB:.1f} GiB available; try {', '.join(hints)}"
        )


def estimate_generation(
    *,
    device: str,
    available: int,
    height: int,
    width: int,
    batch: int,
    guided: bool,
    dtype_bytes: int,
    transformer_params: int,
    hidden_size: int,
    num_heads: int,
    patch_size: int = 2,
    kv_factor: int = 1,
    text_encoder_params: int = 0,
    text_encoder_resident: bool = False,
    vae_params: int = 0,
    vae_dtype_bytes: int = 4,
    vae_spatial: int = 8,
    tile: int | None = None,
    offload: bool = False,
    models_loaded_first: bool = False,
) -> MemoryEstimate:
    """Estimate the stages of one generation of `batch` images of `width` x `height` pixels.

    Args:
        kv_factor: the smallest K/V compression stride over blocks with compression; 1 if any block has none.
        text_encoder_params: 0 when prompts come precomputed.
        text_encoder_resident: T5 stays loaded during denoising (not freed after encoding).
        tile: VAE tile side in pixels, None for an untiled decode.
        offload: components wait in CPU memory and visit the device one at a time.
        models_loaded_first: the transformer and VAE are already loaded when T5 runs.
    """
    b = batch * (2 if guided else 1)
    tokens = (height // (vae_spatial * patch_size)) * (width // (vae_spatial * patch_size))
    kv_tokens = max(1, tokens // (kv_factor * kv_factor))
    transformer_w = transformer_params * dtype_bytes
    text_w = text_encoder_params * dtype_bytes
    vae_w = vae_params * vae_dtype_bytes
    activations = ACTIVATION_FACTOR * b * tokens * hidden_size * dtype_bytes
    if device.startswith("mps"):
        activations += b * num_heads * tokens * kv_tokens * dtype_bytes
    decode = decode_bytes(height, width, vae_dtype_bytes=vae_dtype_bytes, tile=tile, batch=batch)
    resident_text = 0 if offload or not text_encoder_resident else text_w
    resident_transformer = 0 if offload else transformer_w
    resident_vae = 0 if offload else vae_w
    stages = {}
    if text_encoder_params:
        others = transformer_w + vae_w if models_loaded_first and not offload else 0
        stages["encode"] = OVERHEAD_BYTES + text_w + others
    stages["denoise"] = OVERHEAD_BYTES + transformer_w + activations + resident_text + resident_vae
    stages["decode"] = OVERHEAD_BYTES + vae_w + decode + resident_transformer + resident_text
    size_hint = "a smaller --size"
    denoise_hints = [] if kv_factor > 1 else ["--kv-compress"]
    if dtype_bytes == 4:
        denoise_hints.append("--dtype bf16")
    if not device.startswith("cpu"):
        denoise_hints += ["--offload", "--device cpu"]
    decode_hints = [] if tile else ["--tile-vae on"]
    if tile and tile > 512:
        decode_hints.append("--tile-size 512")
    if not device.startswith("cpu"):
        decode_hints += ["--offload"]
    encode_hints = (["--dtype bf16"] if dtype_bytes == 4 else []) + ["--embeddings FILE (precomputed elsewhere)"]
    hints = {"encode": encode_hints, "denoise": denoise_hints + [size_hint], "decode": decode_hints + [size_hint]}
    return MemoryEstimate(device, stages, available, hints)
