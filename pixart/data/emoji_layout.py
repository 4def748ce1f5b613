"""Emoji-world scenes as records, and how they are drawn from a seed: which emoji, what size, which cell, where.

A `Scene` is a background colour plus 1-3 emoji (possibly the same one two or three times), each at a named position
(one cell of a 3x3 grid) and size ("small", "medium", "large"). `sample_scene` draws one from a seed: the background,
the emoji and their sizes first, then the layout (`_layout`): each emoji in a distinct cell, at a random offset inside
it or (snap) at one fixed place on the token lattice, in random cells or (layout "canonical") in one fixed set of cells
per arrangement. Rendering, export and the command line are in `pixart.data.emoji`, which re-exports these names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pixart.data.emoji_vocab import (
    PALETTE,
    RGB,
    SIZE_FRACTIONS,
    entries_for,
    palette_for,
    position_of,
    validate_assets,
)

Size = tuple[int, int]

MIN_SIDE = 32  # smallest image side accepted; below it a small emoji is a few pixels
MAX_OVERLAP = 0.1  # at most this fraction of the smaller object's box may be covered by another's
_TRIES = 64  # layout attempts before shrinking the objects / dropping one
LAYOUTS = ("free", "canonical")  # where two or three emoji go: random cells, or one fixed set per arrangement


@dataclass(frozen=True)
class SceneObject:
    """One emoji instance. It is drawn centred at (x, y) inside the square `box` of side `size` pixels."""

    name: str
    hexcode: str
    category: str
    x: int
    y: int
    size: int  # longest side of the artwork, pixels
    size_word: str  # small | medium | large
    position: str  # one of POSITIONS, the grid cell holding (x, y)

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the square the artwork fits in; x1/y1 exclusive."""
        x0, y0 = self.x - self.size // 2, self.y - self.size // 2
        return x0, y0, x0 + self.size, y0 + self.size


@dataclass(frozen=True)
class Scene:
    """JSON-serialisable record of one image: everything needed to render it and to score a generation of it."""

    width: int
    height: int
    background: str
    background_rgb: RGB
    objects: tuple[SceneObject, ...]
    seed: int | None = None  # `make_scene(seed, width, height)` reproduces the scene when set

    def counts(self) -> dict[str, int]:
        """Number of instances per object name, in order of first appearance."""
        out: dict[str, int] = {}
        for o in self.objects:
            out[o.name] = out.get(o.name, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; each object also carries its `box` for scorers (ignored by from_dict)."""
        d = dataclasses.asdict(self)
        d["background_rgb"] = list(self.background_rgb)
        for od, o in zip(d["objects"], self.objects, strict=True):
            od["box"] = list(o.box)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        fields = {f.name for f in dataclasses.fields(SceneObject)}
        objects = tuple(SceneObject(**{k: v for k, v in o.items() if k in fields}) for o in d["objects"])
        rgb = tuple(int(c) for c in d["background_rgb"])
        return cls(int(d["width"]), int(d["height"]), d["background"], rgb, objects, d.get("seed"))  # type: ignore[arg-type]


# ---- validation helpers -----------------------------------------------------------------------------------------


def parse_sizes(text: str) -> tuple[Size, ...]:
    """Parse "256x256,192x320" into ((256, 256), (192, 320)); ValueError on anything else."""
    sizes = []
    for part in text.split(","):
        w, sep, h = part.strip().lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit()):
            raise ValueError(f"bad image size {part.strip()!r}: expected WIDTHxHEIGHT, e.g. 256x256")
        sizes.append((int(w), int(h)))
    return check_sizes(sizes)


def check_sizes(sizes: Sequence[Size]) -> tuple[Size, ...]:
    """Validate a list of (width, height); each side must be an int >= MIN_SIDE."""
    if len(sizes) == 0:
        raise ValueError("sizes is empty: give at least one (width, height)")
    out = []
    for size in sizes:
        if len(size) != 2 or not all(isinstance(s, int | np.integer) and s >= MIN_SIDE for s in size):
            raise ValueError(f"bad image size {size!r}: width and height must be integers >= {MIN_SIDE}")
        out.append((int(size[0]), int(size[1])))
    return tuple(out)


# ---- sampling ---------------------------------------------------------------------------------------------------


def scene_seed(seed: int, index: int) -> int:
    """Seed of scene `index` of a dataset drawn with `seed` (independent streams, stable across runs)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _axis_range(cell: int, length: int, size: int) -> tuple[int, int] | None:
    """Integer centres that keep the box inside the image and the centre well inside the cell's third."""
    margin = max(1.0, 0.06 * length / 3)
    lo = max(int(np.ceil(cell * length / 3 + margin)), size // 2)
    hi = min(int(np.floor((cell + 1) * length / 3 - margin)), length - size + size // 2)
    return (lo, hi) if lo <= hi else None


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return max(0, iw) * max(0, ih) / smaller


def _snapped(cell: int, length: int, size: int, grid: int) -> int | None:
    """The centre nearest the cell's middle whose box corner lies on a multiple of `grid` pixels, within
    `_axis_range`; the in-range centre nearest the middle when no corner there is on the lattice; None if none fits."""
    span = _axis_range(cell, length, size)
    if span is None:
        return None
    lo, hi = span
    middle = (cell + 0.5) * length / 3
    first, last = -(-(lo - size // 2) // grid), (hi - size // 2) // grid
    candidates = [k * grid + size // 2 for k in range(first, last + 1)]
    if not candidates:
        return min(max(round(middle), lo), hi)
    return min(candidates, key=lambda x: (abs(x - middle), x))


def _layout(
    rng: np.random.Generator,
    width: int,
    height: int,
    sizes: list[int],
    snap: int = 0,
    cells_fixed: Sequence[int] | None = None,
) -> list[tuple[int, int]] | None:
    """Centres for boxes of the given sizes in distinct grid cells with little overlap, or None.

    snap > 0: each box at one fixed place in its cell (`_snapped`: its corner on the snap-pixel lattice), not at a
    random one: the same emoji, size and cell then give the same pixels up to the background. `cells_fixed`: the
    cells (0-8, row by row) of the boxes in order, instead of random ones; one try."""
    for _ in range(1 if cells_fixed is not None and snap else _TRIES):
        cells = rng.choice(9, size=len(sizes), replace=False) if cells_fixed is None else cells_fixed
        centres, boxes = [], []
        for cell, size in zip(cells, sizes, strict=True):
            if snap:
                x, y = _snapped(int(cell) % 3, width, size, snap), _snapped(int(cell) // 3, height, size, snap)
                if x is None or y is None:
                    break
            else:
                xr, yr = _axis_range(int(cell) % 3, width, size), _axis_range(int(cell) // 3, height, size)
                if xr is None or yr is None:
                    break
                x, y = int(rng.integers(xr[0], xr[1] + 1)), int(rng.integers(yr[0], yr[1] + 1))
            box = (x - size // 2, y - size // 2, x - size // 2 + size, y - size // 2 + size)
            if any(_overlap(box, other) > MAX_OVERLAP for other in boxes):
                break
            centres.append((x, y))
            boxes.append(box)
        else:
            return centres
    return None


def sample_scene(
    rng: int | np.random.Generator,
    width: int,
    height: int,
    *,
    colors: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    max_objects: int = 3,
    centred: bool = False,
    min_objects: int = 1,
    snap: int = 0,
    layout: str = "free",
) -> Scene:
    """Draw a scene of the given image size: background, 1..max_objects emoji, their sizes and positions.

    `rng` is a seed (recorded in the scene) or a numpy Generator. Objects are 1-3 distinct emoji kinds, with
    one kind possibly repeated ("two cats"). When a layout does not fit (narrow images, large objects) the
    objects are shrunk, then dropped, so the record always describes what is drawn. `centred` (with
    `max_objects=1`): the one emoji is large and in the middle ("a large cat in the center of a red background"),
    the world in which only which emoji it is varies with the caption, besides the background. `min_objects` 2
    with `max_objects` 2: every scene holds two emoji, two different ones or two of a kind, in the full world's
    proportions (the world of the eval's pair prompts, and of its counts of two). `layout` "canonical": two or three
    emoji go to one fixed set of cells per arrangement (`_canonical_cells`: "A next to B" left and right in the
    middle row, "A above B" (half the pairs of different emoji) top and bottom in the middle column), so that the
    caption of a scene with several emoji says where each one is, as a one-emoji caption does.
    """
    ((width, height),) = check_sizes([(width, height)])
    if not 1 <= max_objects <= 3:
        raise ValueError(f"max_objects must be 1, 2 or 3, got {max_objects!r}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"min_objects must be 1..max_objects ({max_objects}), got {min_objects!r}")
    if centred and max_objects != 1:
        raise ValueError(f"centred scenes hold one emoji: max_objects must be 1, got {max_objects!r}")
    _check_snap(snap)
    _check_layout(layout)
    names, entries = palette_for(colors), entries_for(categories)
    validate_assets()
    seed = int(rng) if isinstance(rng, int | np.integer) else None
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    gen = np.random.default_rng(seed) if seed is not None else rng
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"rng must be an int seed or a numpy Generator, got {type(rng).__name__}")

    background = names[int(gen.integers(len(names)))]
    totals, shares = [1, 2, 3][min_objects - 1 : max_objects], [0.4, 0.35, 0.25][min_objects - 1 : max_objects]
    total = int(gen.choice(totals, p=_normalised(shares)))
    counts = {1: [[1]], 2: [[2], [1, 1]], 3: [[3], [2, 1], [1, 1, 1]]}[total]
    counts_p = {1: [1.0], 2: [0.3, 0.7], 3: [0.2, 0.3, 0.5]}[total]
    kind_counts = counts[int(gen.choice(len(counts), p=counts_p))]
    kinds = [entries[int(i)] for i in gen.choice(len(entries), size=len(kind_counts), replace=False)]
    size_words = [str(w) for w in gen.choice(list(SIZE_FRACTIONS), size=len(kinds), p=[0.3, 0.4, 0.3])]

    if centred:  # the same draws as any one-emoji scene, then the object large and in the middle
        (kind,) = kinds
        x, y, side = width // 2, height // 2, max(8, round(SIZE_FRACTIONS["large"] * min(width, height)))
        obj = SceneObject(
            kind.name, kind.hexcode, kind.category, x, y, side, "large", position_of(x, y, width, height)
        )
        return Scene(width, height, background, PALETTE[background], (obj,), seed)
    instances = [(k, w) for k, w, c in zip(kinds, size_words, kind_counts, strict=True) for _ in range(c)]
    above = layout == "canonical" and len(instances) > 1 and bool(gen.integers(2))
    while True:
        sizes = [max(8, round(SIZE_FRACTIONS[w] * min(width, height))) for _, w in instances]
        fixed = _canonical_cells(instances, above) if layout == "canonical" else None
        centres = _layout(gen, width, height, sizes, snap, fixed)
        if centres is not None:
            break
        if any(w != "small" for _, w in instances):  # shrink the largest by one step, everywhere it occurs
            biggest = max((w for _, w in instances), key=list(SIZE_FRACTIONS).index)
            smaller = {"large": "medium", "medium": "small"}[biggest]
            instances = [(k, smaller if w == biggest else w) for k, w in instances]
        elif len(instances) > 1:
            instances = instances[:-1]
        else:  # unreachable for sides >= MIN_SIDE: a small emoji always fits its cell
            raise RuntimeError(f"cannot place an emoji in a {width}x{height} image")
    objects = tuple(
        SceneObject(k.name, k.hexcode, k.category, x, y, s, w, position_of(x, y, width, height))
        for (k, w), s, (x, y) in zip(instances, sizes, centres, strict=True)
    )
    return Scene(width, height, background, PALETTE[background], objects, seed)


def _canonical_cells(instances: list[tuple[Any, str]], above: bool) -> list[int] | None:
    """The cells of a canonical layout: two different emoji side by side in the middle row (3, 5) or one above the
    other in the middle column (1, 7); two of a kind side by side; three at top left, bottom middle and top right
    (0, 7, 2: left to right, as the captions list them). None for one emoji: its cell stays random."""
    if len(instances) == 1:
        return None
    if len(instances) == 2:
        different = instances[0][0].name != instances[1][0].name
        return [1, 7] if different and above else [3, 5]
    return [0, 7, 2]


def _check_layout(layout: object) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


def _check_snap(snap: object) -> None:
    if not isinstance(snap, int | np.integer) or isinstance(snap, bool) or not 0 <= snap <= 64:
        raise ValueError(f"snap must be an integer number of pixels from 0 (off) to 64, got {snap!r}")


def _normalised(p: list[float]) -> list[float]:
    return [v / sum(p) for v in p]
