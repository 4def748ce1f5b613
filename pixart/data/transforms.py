"""Image -> training tensor, as the reference: resize to cover the bucket, centre-crop, scale to [-1, 1].

Written with PIL + numpy + torch (no torchvision). The steps match the reference's
`Resize(cover) -> CenterCrop(bucket) -> ToTensor -> Normalize(0.5, 0.5)`:

- cover: scale the image so both sides are at least the bucket's, keeping its aspect ratio; the side that limits
  gets exactly the bucket's length and the other is truncated to an integer, as the reference's `int(...)`;
- centre crop: offsets `round((size - crop) / 2)` (torchvision's rule);
- pixels: uint8 RGB -> float in [0, 1] -> `(x - 0.5) / 0.5`.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from torch import Tensor

RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
}


def cover_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """(h, w) after scaling an image of height x width so it covers target (H, W) with its aspect ratio kept.

    Integer arithmetic, so the covering side is never one pixel short from float rounding.
    """
    th, tw = target
    if th * width > tw * height:  # height is the limiting side: th / height > tw / width
        return th, th * width // height
    return tw * height // width, tw


def center_crop_box(height: int, width: int, target: tuple[int, int]) -> tuple[int, int, int, int]:
    """PIL crop box (left, top, right, bottom) of the centred target (H, W) window."""
    th, tw = target
    top, left = int(round((height - th) / 2.0)), int(round((width - tw) / 2.0))
    return left, top, left + tw, top + th


def resize_cover_crop(image: Image.Image, target: tuple[int, int], resample: str = "bicubic") -> Image.Image:
    """Resize `image` to cover target (H, W), then centre-crop it to exactly that size."""
    height, width = image.height, image.width
    h, w = cover_size(height, width, target)
    if (h, w) != (height, width):
        image = image.resize((w, h), RESAMPLE[resample])
    return image.crop(center_crop_box(h, w, target))


def to_tensor(image: Image.Image) -> Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).float()  # (3, H, W) in [0, 255]
    return pixels.div_(127.5).sub_(1.0)  # == (x / 255 - 0.5) / 0.5


def open_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode a whole image file as RGB. Raises whatever PIL raises for an unreadable or truncated file."""
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")  # the reference's `img.convert('RGB')`: alpha is dropped, not composited


def load_pixels(path: str | os.PathLike[str], target: tuple[int, int], resample: str = "bicubic") -> Tensor:
    """Image file -> (3, H, W) tensor in [-1, 1] at the bucket size `target` = (H, W)."""
    return to_tensor(resize_cover_crop(open_rgb(path), target, resample))
