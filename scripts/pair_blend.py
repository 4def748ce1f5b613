"""Are the two objects of a pair sample drawn alike? Colour distance between a pair's two objects, ours vs real.

    python scripts/pair_blend.py runs/demo/eval/package runs/demo/eval/v10-package

For each pair prompt of an eval folder (`pixart eval --out DIR`: report.json and images/) with two different emoji
("A next to B", "A above B"), the foreground of the generated image (pixels more than 80 away from the background's
RGB) is split in two along the relation's axis, at the median of its pixels, and each half's mean colour taken; the
same is done on the real render of the prompt's scene. A model that draws
each emoji of a pair in its own colours gives distances like the renders'; one that draws the same blend in both
places gives distances near 0. Also printed: how far the first object's colour is from the second one's colour in
another prompt (a different pair of emoji), as a scale. Numbers only; the eval's own scores are in report.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pixart.data.emoji import render_scene
from pixart.data.emoji_layout import Scene

FOREGROUND = 80.0  # RGB distance from the background beyond which a pixel is an object's


def halves(image: np.ndarray, background: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean colour of the foreground before and after its median along `axis` (1: x, 0: y); None if too little."""
    mask = np.linalg.norm(image - background, axis=-1) > FOREGROUND  # (H, W)
    coords = np.nonzero(mask)[axis]
    if coords.size < 20:
        return None
    cut = np.median(coords)
    pixels = image[mask]  # (N, 3)
    first, second = pixels[coords < cut], pixels[coords >= cut]
    if len(first) < 10 or len(second) < 10:
        return None
    return first.mean(0), second.mean(0)


def folder_distances(folder: Path) -> dict[str, float]:
    report = json.loads((folder / "report.json").read_text())
    ours, real, pairs = [], [], []
    for item in report["images"]:
        scene = Scene.from_dict(item["scene"])
        names = [o.name for o in scene.objects]
        relation = " above " if " above " in item["prompt"] else " next to " if " next to " in item["prompt"] else ""
        if item["kind"] != "pair" or len(set(names)) != 2 or not relation:
            continue
        image = np.asarray(Image.open(folder / item["image"]).convert("RGB"), dtype=np.float64)
        background = np.asarray(scene.background_rgb, dtype=np.float64)
        drawn = halves(image, background, 0 if relation == " above " else 1)
        if drawn is None:
            continue
        axis = 0 if relation == " above " else 1
        rendered = halves(np.asarray(render_scene(scene), dtype=np.float64), background, axis)
        ours.append(float(np.linalg.norm(drawn[0] - drawn[1])))
        if rendered is not None:
            real.append(float(np.linalg.norm(rendered[0] - rendered[1])))
        pairs.append(drawn)
    across = [float(np.linalg.norm(a[0] - b[1])) for i, a in enumerate(pairs) for j, b in enumerate(pairs) if i != j]
    return {
        "prompts": len(ours),
        "ours_within": float(np.median(ours)) if ours else float("nan"),
        "real_within": float(np.median(real)) if real else float("nan"),
        "ours_across": float(np.median(across)) if across else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="eval output folders (report.json, images/)")
    args = parser.parse_args()
    print("| eval folder | pair prompts | our two objects, colour distance (median) | real renders' | ours, first vs "
          "another prompt's second |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for folder in args.folders:
        d = folder_distances(folder)
        print(
            f"| {folder} | {d['prompts']} | {d['ours_within']:.1f} | {d['real_within']:.1f} | {d['ours_across']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
