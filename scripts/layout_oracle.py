"""How much could a model gain at high noise from the caption's position and colour words alone?

At t near 1000 the noisy latent shows almost nothing, so the best clean-image estimate is the average of every scene
the caption allows. This measures what such averages are worth on single-object square scenes of the emoji world:
each held-out scene's latent is predicted from its own flat background (the per-channel median) plus the mean
"detail" (latent minus its background) of the training scenes that share a key, and the RMS error is compared with
the flat background alone. Keys: the object's 3x3 cell and size word; the cell and the background colour; nothing
(one mean for all). The training-set number is leave-one-out, so a key with few scenes is not flattered.

    python scripts/layout_oracle.py --train runs/demo/data-128 --heldout /tmp/heldout-data

`--heldout` is an export with another seed, e.g. `python -m pixart.data.emoji --out /tmp/heldout-data --n 1000
--seed 7 --sizes 128x128,160x96,96x160,144x112,112x144`. Latents come from the demo VAE (`--vae`), as the cache.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

KEYS = {
    "cell + size": lambda o, s: (o["position"], o["size_word"]),
    "cell + background": lambda o, s: (o["position"], s["background"]),
    "nothing (one mean)": lambda o, s: (),
}


def single_object_scenes(folder: Path, side: int, limit: int) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    rows = [r for r in rows if (r["width"], r["height"]) == (side, side) and len(r["scene"]["objects"]) == 1]
    return rows[:limit]


@torch.no_grad()
def details(vae, folder: Path, rows: list[dict]) -> torch.Tensor:
    """(N, C, h, w): each scene's scaled latent minus its own per-channel median (its flat background)."""
    pixels = [np.asarray(Image.open(folder / r["path"]).convert("RGB"), np.float32) / 127.5 - 1 for r in rows]
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)  # (N, 3, H, W)
    latents = torch.cat([vae.encode(x[i : i + 64]).latent_dist.mean for i in range(0, len(x), 64)])
    latents = latents * vae.config.scaling_factor
    return latents - latents.flatten(2).median(dim=2).values[..., None, None]


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def main() -> int:
    from diffusers import AutoencoderKL

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=Path, default=Path("runs/demo/data-128"))
    p.add_argument("--heldout", type=Path, required=True)
    p.add_argument("--vae", default="runs/demo/export/vae")
    p.add_argument("--side", type=int, default=128)
    p.add_argument("--limit", type=int, default=2000, help="training scenes read at most (default %(default)s)")
    args = p.parse_args()
    vae = AutoencoderKL.from_pretrained(args.vae).eval()
    train_rows = single_object_scenes(args.train, args.side, args.limit)
    held_rows = single_object_scenes(args.heldout, args.side, args.limit)
    train, held = details(vae, args.train, train_rows), details(vae, args.heldout, held_rows)
    print(f"{len(train)} training and {len(held)} held-out single-object {args.side}x{args.side} scenes")
    print("| x̂_0 | held-out RMS error | training RMS error (leave-one-out) |")
    print("|---|---:|---:|")
    print(f"| the flat background alone | {rms(held):.3f} | {rms(train):.3f} |")
    for name, key in KEYS.items():
        groups = defaultdict(list)
        train_keys = [key(r["scene"]["objects"][0], r["scene"]) for r in train_rows]
        for k, d in zip(train_keys, train, strict=True):
            groups[k].append(d)
        sums = {k: (torch.stack(v).sum(0), len(v)) for k, v in groups.items()}
        held_keys = [key(r["scene"]["objects"][0], r["scene"]) for r in held_rows]
        zero = torch.zeros_like(held[0])
        guess = torch.stack([sums[k][0] / sums[k][1] if k in sums else zero for k in held_keys])
        counted = [sums[k] for k in train_keys]
        loo = [(s - d) / (n - 1) if n > 1 else zero for d, (s, n) in zip(train, counted, strict=True)]
        print(f"| background + mean detail of the same {name} | {rms(held - guess):.3f} "
              f"| {rms(train - torch.stack(loo)):.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
