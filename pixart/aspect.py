"""Aspect-ratio bins: the image sizes PixArt-Σ was trained on, and the closest one to a requested ratio.

Multi-scale training buckets images by height/width ratio into 40 bins per base resolution (PixArt-Σ data
code, REFERENCE.md §1.7). Generating at a bin size keeps the model on sizes it has seen; `--aspect 16:9`
picks the bin closest to the requested ratio for the model's native resolution.

Tables map the ratio h / w, as the reference's string keys, to (height, width) in pixels. The reference's
256, 512 and 2048 tables are exactly the 1024 table scaled by 1/4, 1/2 and 2 (same keys, every size a
multiple of 16), so they are derived from it here; the 2880 table has its own keys and sizes.
"""

from __future__ import annotations

import math

# ---- tables ----------------------------------------------------------------------------------------------------

# ratio key (h / w) -> (height, width) at base resolution 1024.
_BINS_1024: dict[str, tuple[int, int]] = {
    "0.25": (512, 2048), "0.26": (512, 1984), "0.27": (512, 1920), "0.28": (512, 1856),
    "0.32": (576, 1792), "0.33": (576, 1728), "0.35": (576, 1664), "0.4": (640, 1600),
    "0.42": (640, 1536), "0.48": (704, 1472), "0.5": (704, 1408), "0.52": (704, 1344),
    "0.57": (768, 1344), "0.6": (768, 1280), "0.68": (832, 1216), "0.72": (832, 1152),
    "0.78": (896, 1152), "0.82": (896, 1088), "0.88": (960, 1088), "0.94": (960, 1024),
    "1.0": (1024, 1024), "1.07": (1024, 960), "1.13": (1088, 960), "1.21": (1088, 896),
    "1.29": (1152, 896), "1.38": (1152, 832), "1.46": (1216, 832), "1.67": (1280, 768),
    "1.75": (1344, 768), "2.0": (1408, 704), "2.09": (1472, 704), "2.4": (1536, 640),
    "2.5": (1600, 640), "2.89": (1664, 576), "3.0": (1728, 576), "3.11": (1792, 576),
    "3.62": (1856, 512), "3.75": (1920, 512), "3.88": (1984, 512), "4.0": (2048, 512),
}  # fmt: skip

_BINS_2880: dict[str, tuple[int, int]] = {
    "0.25": (1408, 5760), "0.26": (1408, 5568), "0.27": (1408, 5376), "0.28": (1408, 5184),
    "0.32": (1600, 4992), "0.33": (1600, 4800), "0.34": (1600, 4672), "0.4": (1792, 4480),
    "0.42": (1792, 4288), "0.47": (1920, 4096), "0.49": (1920, 3904), "0.51": (1920, 3776),
    "0.55": (2112, 3840), "0.59": (2112, 3584), "0.68": (2304, 3392), "0.72": (2304, 3200),
    "0.78": (2496, 3200), "0.83": (2496, 3008), "0.89": (2688, 3008), "0.93": (2688, 2880),
    "1.0": (2880, 2880), "1.07": (2880, 2688), "1.12": (3008, 2688), "1.21": (3008, 2496),
    "1.28": (3200, 2496), "1.39": (3200, 2304), "1.47": (3392, 2304), "1.7": (3584, 2112),
    "1.82": (3840, 2112), "2.03": (3904, 1920), "2.13": (4096, 1920), "2.39": (4288, 1792),
    "2.5": (4480, 1792), "2.92": (4672, 1600), "3.0": (4800, 1600), "3.12": (4992, 1600),
    "3.68": (5184, 1408), "3.82": (5376, 1408), "3.95": (5568, 1408), "4.0": (5760, 1408),
}  # fmt: skip


def _scaled(table: dict[str, tuple[int, int]], num: int, den: int) -> dict[str, tuple[int, int]]:
    return {k: (h * num // den, w * num // den) for k, (h, w) in table.items()}


ASPECT_RATIOS: dict[int, dict[str, tuple[int, int]]] = {
    256: _scaled(_BINS_1024, 1, 4),
    512: _scaled(_BINS_1024, 1, 2),
    1024: dict(_BINS_1024),
    2048: _scaled(_BINS_1024, 2, 1),
    2880: dict(_BINS_2880),
}
"""Base resolution -> {ratio h/w: (height, width)}, the reference's ASPECT_RATIO_{256,512,1024,2048,2880}."""


# ---- lookup -----------------------------------------------------------------------------------------------------


def bins_for(native_size: int) -> dict[str, tuple[int, int]]:
    """The bin table of a model whose native square side is `native_size` pixels.

    Released models (256, 512, 1024, 2048) get the reference's table. Any other native size (a small test
    model, a custom fine-tune) gets the nearest table scaled to its side, each size rounded to a multiple of 16.
    """
    if native_size in ASPECT_RATIOS:
        return ASPECT_RATIOS[native_size]
    if native_size < 16:
        raise ValueError(f"native size {native_size}: must be at least 16 px")
    base = min((256, 512, 1024, 2048), key=lambda b: abs(math.log(native_size / b)))
    scale = native_size / base
    return {k: (_round16(h * scale), _round16(w * scale)) for k, (h, w) in ASPECT_RATIOS[base].items()}


def _round16(x: float) -> int:
    return max(16, int(round(x / 16)) * 16)


def closest_bin(height: float, width: float, table: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(height, width) of the bin whose ratio h/w is closest to `height / width` (first one on ties)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"aspect {width}:{height}: both sides must be positive")
    ratio = height / width
    key = min(table, key=lambda k: abs(float(k) - ratio))
    return table[key]


def parse_aspect(text: str) -> tuple[float, float]:
    """'16:9' (width:height, like --size WxH) -> (width, height) as floats; also accepts '16/9' and '1.5'."""
    raw = text.strip()
    for sep in (":", "/"):
        if sep in raw:
            parts = raw.split(sep)
            break
    else:
        parts = [raw, "1"]
    try:
        w, h = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--aspect {text!r}: expected W:H with positive numbers, e.g. 16:9 or 1:1") from None
    if len(parts) != 2 or not (math.isfinite(w) and math.isfinite(h)) or w <= 0 or h <= 0:
        raise ValueError(f"--aspect {text!r}: expected W:H with positive numbers, e.g. 16:9 or 1:1")
    if not 0.2 <= w / h <= 5.0:
        raise ValueError(f"--aspect {text!r}: width/height must be between 1:5 and 5:1 (bins span 1:4 to 4:1)")
    return w, h


def size_for_aspect(aspect: str, native_size: int) -> tuple[int, int]:
    """`--aspect W:H` -> (width, height) of the closest bin for a model of native side `native_size`."""
    w, h = parse_aspect(aspect)
    height, width = closest_bin(h, w, bins_for(native_size))
    return width, height


# ---- explicit sizes -----------------------------------------------------------------------------------------------

MAX_SIDE = 8192


def parse_size(text: str) -> tuple[int, int]:
    """'1024x768' (width x height) -> (1024, 768), validated by `check_size`."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1024x768") from None
    check_size(width, height, what=f"--size {text}")
    return width, height


def check_size(width: int, height: int, *, multiple: int = 16, max_side: int = MAX_SIDE, what: str = "") -> None:
    """Refuse sizes the model cannot take: each side a positive multiple of `multiple`, at most `max_side`.

    `multiple` is the VAE's 8x downsampling times the transformer's 2x2 patches (16 for PixArt-Σ).
    """
    what = what or f"size {width}x{height}"
    for name, side in (("width", width), ("height", height)):
        if not isinstance(side, int) or side <= 0 or side > max_side or side % multiple:
            raise ValueError(
                f"{what}: {name} {side} is not allowed; each side must be a multiple of {multiple} "
                f"from {multiple} to {max_side} px"
            )
