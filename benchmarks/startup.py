"""Benchmark: where the seconds of one `pixart generate` go, from an empty process to a saved PNG.

The issue's target for the bundled model is "`pixart generate` with defaults <= 10 s wall, model load
included". This script shows what that wall time is made of, each part measured in a fresh process:

1. `pixart generate PROMPT` with the defaults, timed from outside (the number the target is about);
2. the same work in one process with a clock between its parts: importing torch, then the libraries the
   pipeline builds on (transformers' T5 and diffusers' AutoencoderKL), loading the transformer, T5 and VAE,
   encoding the prompt, sampling, decoding;
3. `python -c pass`, the interpreter alone.

Each part is printed with its share of (2), so the floor set by imports alone is visible.

    python benchmarks/startup.py                          # the bundled model
    python benchmarks/startup.py --model runs/demo/dit-hires/final.safetensors \
        --text-encoder runs/demo/export --vae runs/demo/export/vae --size 256x256
    python benchmarks/startup.py --rounds 3               # the least time of 3 runs of each

Run it on an otherwise idle machine: every part is CPU-bound.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a red apple next to a cat on a blue background"

# Runs in a fresh interpreter; prints one JSON object {part: seconds}. Arguments: model, te, vae, size, steps.
STAGES = r"""
import json, sys, time
clock = [time.perf_counter()]
parts = {}
def lap(name):
    now = time.perf_counter(); parts[name] = now - clock[0]; clock[0] = now
import torch; lap("import torch")
from transformers import T5EncoderModel; lap("import transformers (T5)")
from diffusers import AutoencoderKL; lap("import diffusers (AutoencoderKL)")
from pixart.commands.generate import BUNDLED_MODEL
from pixart.pipeline import Text2Image; lap("import pixart")
model, te, vae, size, steps = sys.argv[1:6]
pipe = Text2Image.from_pretrained(model or BUNDLED_MODEL, text_encoder=te or None, vae=vae or None)
pipe.transformer; lap("load transformer")
pipe.text_encoder; lap("load T5 + tokenizer")
text = pipe.encode([sys.argv[6]]); lap("encode prompt")
pipe.vae; lap("load VAE")
width, height = (int(v) for v in size.split("x")) if size else (pipe.native_size, pipe.native_size)
latents = pipe.generate(text, width=width, height=height, steps=int(steps) if steps else None, seed=0,
                        output="latent", check_memory=False); lap("sample")
pipe.decode(latents); lap("decode")
print(json.dumps(parts))
"""


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="model (default: the bundled one)")
    parser.add_argument("--text-encoder", default="")
    parser.add_argument("--vae", default="")
    parser.add_argument("--size", default="", help="WxH (default: native)")
    parser.add_argument("--steps", default="", help="sampling steps (default: the sampler's)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each measurement; the least time counts")
    args = parser.parse_args()

    cli = [sys.executable, "-m", "pixart.cli", "generate", PROMPT, "--seed", "0", "--force"]
    for flag, value in (("--model", args.model), ("--text-encoder", args.text_encoder), ("--vae", args.vae),
                        ("--size", args.size), ("--steps", args.steps)):  # fmt: skip
        cli += [flag, value] if value else []
    stages = [sys.executable, "-c", STAGES, args.model, args.text_encoder, args.vae, args.size, args.steps, PROMPT]

    best_cli, best_parts, best_empty = float("inf"), None, float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            best_empty = min(best_empty, timed([sys.executable, "-c", "pass"])[0])
            best_cli = min(best_cli, timed([*cli, "--out", str(Path(tmp) / "image.png")])[0])
            parts = json.loads(timed(stages)[1].strip().splitlines()[-1])
            if best_parts is None or sum(parts.values()) < sum(best_parts.values()):
                best_parts = parts

    total = sum(best_parts.values())
    print(f"`pixart generate` with defaults, wall, fresh process: {best_cli:.2f} s (least of {args.rounds})")
    print(f"the same work, one process, by part (sum {total:.2f} s):")
    for name, seconds in best_parts.items():
        print(f"  {name:34s} {seconds:6.2f} s  {seconds / total:6.1%}")
    imports = sum(s for name, s in best_parts.items() if name.startswith("import"))
    print(f"imports alone: {imports:.2f} s ({imports / total:.1%} of the parts); `python -c pass`: {best_empty:.2f} s")


if __name__ == "__main__":
    main()
