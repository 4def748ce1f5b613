"""Aspect-ratio buckets: which bin an image belongs to, and the bin tables training uses.

A bin table maps a ratio string `h/w` (e.g. "0.57") to a target size (H, W) in pixels, as the reference's
`ASPECT_RATIO_{256,512,1024,2048,2880}` (REFERENCE.md §1.7). An image of h x w pixels goes to the bin whose ratio
is closest to h / w; ties go to the bin listed first. A fixed-size run is a table with one bin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Bins = dict[str, tuple[int, int]]  # ratio key "h/w" -> (H, W) in pixels

RESOLUTIONS = (256, 512, 1024, 2048, 2880)  # the reference's multi-aspect tables
LANCZOS_FROM = 2048  # tables at or above this base size resize with LANCZOS (reference), smaller ones BICUBIC


def normalise_bins(bins: Mapping[str, object]) -> Bins:
    """Check a bin table and return it as {str: (int, int)}, keeping its order.

    Raises:
        ValueError: empty table, a key that is not a number, or a size that is not two positive integers.
    """
    if not bins:
        raise ValueError("the bucket table is empty")
    out: Bins = {}
    for key, size in bins.items():
        try:
            float(key)
            values = [float(v) for v in size]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(f"bucket {key!r}: expected a ratio key and an (H, W) size, got {size!r}") from None
        if len(values) != 2 or not all(v > 0 and v.is_integer() for v in values):
            raise ValueError(f"bucket {key!r}: size must be two positive integers, got {size!r}")
        out[str(key)] = (int(values[0]), int(values[1]))
    return out


def bins_for(resolution: int) -> Bins:
    """The reference's multi-aspect table for a base resolution (256, 512, 1024, 2048, 2880).

    Other sizes get the nearest table scaled to them (`pixart.aspect.bins_for`), e.g. for tiny test models.
    """
    from pixart import aspect  # the generation side owns the tables

    return normalise_bins(aspect.bins_for(int(resolution)))


def fixed_bins(height: int, width: int) -> Bins:
    """A one-bucket table: every image is resized to cover (height, width) and centre-cropped to it."""
    return normalise_bins({f"{height / width:.2f}": (height, width)})


def parse_size(text: str) -> tuple[int, int]:
    """'512' -> (512, 512); '768x1344' -> (768, 1344) as (H, W)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"size must be N or HxW, got {text!r}") from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"size must be N or HxW with positive integers, got {text!r}")
    return size  # type: ignore[return-value]


def closest_bucket(height: int, width: int, bins: Mapping[str, object]) -> str:
    """Key of the bin whose ratio is closest to height / width (the reference rule; first listed wins ties)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    ratio = height / width
    return min(bins, key=lambda key: abs(float(key) - ratio))


def base_size(bins: Mapping[str, tuple[int, int]]) -> int:
    """The table's nominal resolution: the side of the square with the area of its most square bin."""
    height, width = bins[closest_bucket(1, 1, bins)]
    return round(math.sqrt(height * width))


def resample_name(bins: Mapping[str, tuple[int, int]]) -> str:
    """'lanczos' for 2048-and-up tables, else 'bicubic', as the reference's data pipeline."""
    return "lanczos" if base_size(bins) >= LANCZOS_FROM else "bicubic"
