"""Experiment: does a demo DiT draw each emoji when nothing else is asked of it?

    python scripts/centre_identity.py runs/demo/dit-retext-centre/final.safetensors --export runs/demo/export-v2
    python scripts/centre_identity.py pixart/assets/demo            # a package folder (its own T5 and VAE)
    python scripts/centre_identity.py pixart/assets/demo --size 256 --size-word small   # small, still centred

One prompt per vocabulary emoji, "a large NAME in the center of a COLOUR background" (the identity lesson's
caption; colours drawn with a fixed seed; `--size-word` asks for a medium or small one instead), sampled as
`pixart eval` samples (prompt i with seed i) and scored by `pixart eval`'s scorer. It separates drawing an emoji
from placing it: `pixart eval`'s single prompts ask for both. The same idea as `scripts/identity_rule.py`'s id_acc,
but on real samples, not on one x̂_0.

Not a test: a measurement for docs/demo-model.md.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def centred_prompts(side: int, seed: int, size_word: str = "large") -> list:
    """One `EvalPrompt` per vocabulary emoji: centred, of the given size, on a seeded background colour."""
    import pixart.data.emoji as emoji
    from pixart.data.emoji_vocab import PALETTE, SIZE_FRACTIONS, VOCABULARY
    from pixart.eval.prompts import EvalPrompt

    rng = random.Random(seed)
    colours = list(PALETTE.items())
    size = round(SIZE_FRACTIONS[size_word] * side)
    prompts = []
    for i, entry in enumerate(VOCABULARY):
        colour, rgb = colours[rng.randrange(len(colours))]
        thing = emoji.SceneObject(
            entry.name, entry.hexcode, entry.category, side // 2, side // 2, size, size_word, "center"
        )
        scene = emoji.Scene(side, side, colour, rgb, (thing,))
        prompts.append(EvalPrompt(i, scene, emoji.short_caption(scene)))
    return prompts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="transformer checkpoint or package folder")
    p.add_argument("--export", default=None, help="T5 + vae/ folder, for a bare transformer checkpoint")
    p.add_argument("--size", type=int, default=128, help="square image side")
    p.add_argument("--size-word", default="large", choices=("small", "medium", "large"), help="emoji size asked for")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--seed", type=int, default=0, help="colour seed; sample i uses seed i")
    p.add_argument("--grid", default=None, help="write the samples with their verdicts here (PNG)")
    args = p.parse_args(argv)

    import torch

    from pixart.eval.run import evaluate, save_grid
    from pixart.pipeline import Text2Image

    torch.set_num_threads(2)
    vae = str(Path(args.export) / "vae") if args.export else None
    pipe = Text2Image.from_pretrained(args.model, text_encoder=args.export, vae=vae)
    prompts = centred_prompts(args.size, args.seed, args.size_word)
    results = evaluate(pipe, prompts, steps=args.steps, cfg=args.cfg, sampler="dpm-solver++", seed=0, batch=10)
    drawn = [r for r in results if all(c.passed for c in r.score.checks if c.category == "identity")]
    share = f"{len(drawn)}/{len(results)} {args.size_word} emoji drawn ({len(drawn) / len(results):.2f})"
    print(f"{args.model}: {share}, {args.size} px")
    missed = [f"{r.prompt.scene.objects[0].name} -> {r.score.detections[0].name if r.score.detections else '-'}"
              for r in results if r not in drawn]  # fmt: skip
    print("missed (asked -> found):", "; ".join(missed))
    if args.grid:
        save_grid(results, args.grid, columns=10, limit=len(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
