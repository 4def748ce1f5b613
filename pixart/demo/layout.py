"""Where a model's samples put their objects, measured in latent space before any emoji is recognisable.

`pixart eval` scores finished images with a template matcher, which reads 0 until the model draws emoji well enough
to be recognised. This measures the step before: for the single-object prompts of the eval set (held-out scenes
whose caption names the object's size and 3x3 cell), it samples latents with the default sampler and compares them
with the latents of the scenes themselves (rendered, then encoded by the same VAE):

- **detail energy**: the mean squared distance of the latent from its own background (the per-channel median over
  the image), i.e. how much is drawn on the background at all; reported for the samples, for the real scenes, and
  as their ratio (1 = as much as the scenes have);
- **box ratio**: the share of that energy inside the requested object's box, divided by the box's share of the
  image. 1 means the energy is spread as if the box were not there (chance), the scenes themselves score far
  above 1, and a model that draws its object where the caption says rises towards them.

    python -m pixart.demo.layout runs/demo/dit-base/final.safetensors --size 128
    python -m pixart.demo.layout pixart/assets/demo                 # the package, at its native size
    python -m pixart.demo.layout A.safetensors B.safetensors --size 128   # compare (e.g. two checkpoints)
    python -m pixart.demo.layout MODEL --from-t 300,500,700     # start from the scenes noised to t (SDEdit)

`--from-t` asks the other question: from which noise level does the model keep an object that is already there?
It noises the scenes' own latents to t and denoises them with the DDIM steps at or below t (of `--steps`, default
20), so a model that denoises well but cannot yet lay out a scene from its caption keeps the object from low t and
loses it from high t.

Model files without their own text encoder and VAE take them from `--text-encoder` / `--vae` (default: the demo
build's `runs/demo/export`). One markdown row per model.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

EXPORT = Path("runs/demo/export")


@dataclass(frozen=True)
class Layout:
    """Mean detail energy and box ratio of a set of latents (see the module docstring)."""

    energy: float
    box_ratio: float


def latent_box(box: tuple[int, int, int, int], factor: int, side: tuple[int, int]) -> tuple[int, int, int, int]:
    """A pixel box (x0, y0, x1, y1; x1/y1 exclusive) as latent cells: every cell the box touches, clipped."""
    h, w = side
    x0, y0, x1, y1 = box
    return max(0, x0 // factor), max(0, y0 // factor), min(w, -(-x1 // factor)), min(h, -(-y1 // factor))


def object_energy(latents: Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> Layout:
    """Mean detail energy and box ratio of latents (B, C, h, w), with one box in latent cells per latent."""
    if len(latents) != len(boxes) or len(latents) == 0:
        raise ValueError(f"need one box per latent, got {len(latents)} latents and {len(boxes)} boxes")
    x = latents.float()
    background = x.flatten(2).median(dim=2).values[..., None, None]  # (B, C, 1, 1)
    energy = ((x - background) ** 2).sum(dim=1)  # (B, h, w)
    h, w = energy.shape[1:]
    ratios = []
    for e, (x0, y0, x1, y1) in zip(energy, boxes, strict=True):
        share = (y1 - y0) * (x1 - x0) / (h * w)
        total = float(e.sum())
        if share <= 0 or total == 0:
            ratios.append(0.0 if total == 0 else float("nan"))
            continue
        ratios.append(float(e[y0:y1, x0:x1].sum()) / total / share)
    c = latents.shape[1]
    return Layout(energy=float(energy.mean()) / c, box_ratio=float(np.nanmean(ratios)))


def object_boxes(prompts, factor: int, side: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The latent-cell box of each single-object prompt's object."""
    return [latent_box(p.scene.objects[0].box, factor, side) for p in prompts]


def single_object_prompts(n: int, size: int) -> list:
    """The first `n` single-object prompts of the eval set (`pixart.eval.prompts`) at a square `size`."""
    from pixart.eval.prompts import prompt_set

    found, total = [], n
    while len(found) < n:
        total *= 2
        found = [p for p in prompt_set(total, size, size) if p.kind == "single"]
    return found[:n]


@torch.no_grad()
def scene_latents(vae, scenes) -> Tensor:
    """Scaled VAE latents (B, C, h, w) of the rendered scenes (the posterior mean, as the training cache stores)."""
    from pixart.data.emoji import render_scene
    from pixart.data.transforms import to_tensor

    pixels = torch.stack([to_tensor(render_scene(s)) for s in scenes])  # (B, 3, H, W) in [-1, 1]
    mean = vae.model.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean
    return mean.float().cpu() * vae.scaling_factor


def measure(pipe, prompts, *, steps: int | None = None, cfg: float | None = None, seed: int = 0) -> tuple:
    """(Layout of the samples, Layout of the scenes) for the given single-object prompts."""
    latents = pipe.generate([p.prompt for p in prompts], steps=steps, cfg=cfg, seed=seed, output="latent")
    boxes = object_boxes(prompts, pipe.vae.spatial_factor, tuple(latents.shape[2:]))
    scenes = scene_latents(pipe.vae, [p.scene for p in prompts])
    return object_energy(latents.cpu(), boxes), object_energy(scenes, boxes)


@torch.no_grad()
def resample_from(pipe, prompts, x0: Tensor, t_start: int, *, steps: int, cfg: float, seed: int = 0) -> Tensor:
    """SDEdit: the latents x0 (B, C, h, w) noised to `t_start`, then denoised by DDIM's steps at or below it."""
    from pixart.diffusion.denoiser import Conditioning, make_denoiser
    from pixart.diffusion.schedules import make_scheduler

    scheduler = make_scheduler("ddim", pipe.sampling_schedule())
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps[scheduler.timesteps <= t_start]  # never empty: DDIM's last step is t = 0
    text = pipe.encode([p.prompt for p in prompts])
    n = len(prompts)
    cond = Conditioning(
        text.embeds, text.mask, text.negative_embeds.expand(n, -1, -1), text.negative_mask.expand(n, -1)
    )
    denoise = make_denoiser(pipe.transformer, cond, cfg)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    x = scheduler.add_noise(x0, noise, timesteps[:1])  # (B, C, h, w) at the first step kept
    for t in timesteps:
        x = scheduler.step(denoise(x, t), t, x, return_dict=False)[0]
    return x


def parse_times(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 <= v < 1000 for v in values):
        raise ValueError(f"--from-t {text!r}: expected integers in 0..999, comma-separated")
    return values


def add_model_arguments(p: argparse.ArgumentParser, prompts: int) -> None:
    """The models to measure, their image size, how many single-object prompts (default `prompts`), the seed and
    the text encoder / VAE of bare weight files (shared with `pixart.demo.position_probe`)."""
    p.add_argument("models", nargs="+", help="model folders or weight files")
    p.add_argument("--size", type=int, help="square image side (default: each model's native size)")
    p.add_argument("-n", type=int, default=prompts, help="single-object prompts (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-encoder", default=str(EXPORT), help="for weight files without one")
    p.add_argument("--vae", default=str(EXPORT / "vae"), help="for weight files without one")


def load_pipeline(model: str, args: argparse.Namespace):
    """A Text2Image for a model folder, or for a weight file with `--text-encoder` / `--vae`."""
    from pixart.pipeline import Text2Image

    extra = {} if Path(model).is_dir() else {"text_encoder": args.text_encoder, "vae": args.vae}
    return Text2Image.from_pretrained(model, **extra)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pixart.demo.layout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(p, prompts=24)
    p.add_argument("--steps", type=int, help="sampler steps (default: the sampler's)")
    p.add_argument("--cfg", type=float, help="guidance scale (default: the sampler's)")
    p.add_argument("--from-t", help="start from the scenes noised to these t (comma-separated) instead of noise")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"-n {args.n}: must be >= 1")
    try:
        starts = parse_times(args.from_t) if args.from_t else None
    except ValueError as e:
        p.error(str(e))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    print("| model | size | start | detail energy, samples | detail energy, scenes | ratio | box ratio, samples "
          "| box ratio, scenes |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for model in args.models:
        pipe = load_pipeline(model, args)
        size = args.size or pipe.native_size
        prompts = single_object_prompts(args.n, size)
        if starts is None:
            rows = [("noise", *measure(pipe, prompts, steps=args.steps, cfg=args.cfg, seed=args.seed))]
        else:
            scenes = scene_latents(pipe.vae, [q.scene for q in prompts])
            boxes = object_boxes(prompts, pipe.vae.spatial_factor, tuple(scenes.shape[2:]))
            steps, cfg = args.steps or 20, 4.5 if args.cfg is None else args.cfg
            rows = []
            for t in starts:
                out = resample_from(pipe, prompts, scenes, t, steps=steps, cfg=cfg, seed=args.seed)
                rows.append((f"scene at t={t}", object_energy(out, boxes), object_energy(scenes, boxes)))
        for start, sample, scene in rows:
            print(f"| {model} | {size} | {start} | {sample.energy:.3f} | {scene.energy:.3f} "
                  f"| {sample.energy / scene.energy:.2f} | {sample.box_ratio:.2f} | {scene.box_ratio:.2f} |",
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
