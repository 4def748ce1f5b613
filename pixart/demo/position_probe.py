"""Does the caption's position word move the object in a model's clean-image estimate at high noise?

Sampling decides where objects go in its first steps, at high t, where the noisy latent shows almost nothing and
the caption is all the model has. This asks the model directly, with one forward pass per prompt: for the eval set's
single-object prompts (`pixart.demo.layout.single_object_prompts`) it builds a twin of each scene with the object
mirrored through the image centre (top left <-> bottom right, top <-> bottom, left <-> right; objects in the centre
cell are skipped) and its caption, gives the model both captions with the same noisy latent (the scene's flat
background noised to t, the same noise for both), and takes the difference D of the two clean-image estimates x̂_0.

- **inside / outside**: the mean of |D|² over the two objects' boxes divided by its mean elsewhere (per pair, then
  averaged). A model that ignores the position word changes its estimate (if at all) everywhere alike: 1. The
  scenes themselves (the same difference between the two scenes' own VAE latents) score far above 1.
- **moved energy**: the mean of |D|² inside the boxes as a share of the scenes' own (per pair, then averaged): how
  much of the object the model moves (0 = nothing, 1 = as much as is there). At high t the best possible estimate
  is a blur of every object the caption allows, so this stays well below 1 even for a perfect model.

    python -m pixart.demo.position_probe runs/demo/dit-base/final.safetensors --size 128
    python -m pixart.demo.position_probe A.safetensors B.safetensors --size 128 --t 999,900,800
    python -m pixart.demo.position_probe MODEL --size 128 --object sun    # every scene's emoji replaced by a sun

Model files without their own text encoder and VAE take them from `--text-encoder` / `--vae` (default: the demo
build's `runs/demo/export`). One markdown row per model and t.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from pixart.demo.layout import (
    add_model_arguments,
    latent_box,
    load_pipeline,
    parse_times,
    scene_latents,
    single_object_prompts,
)

# The cell an object moves to: its mirror image through the image centre.
MIRROR = {
    "top left": "bottom right", "top": "bottom", "top right": "bottom left", "left": "right",
    "right": "left", "bottom left": "top right", "bottom": "top", "bottom right": "top left",
}  # fmt: skip


def mirrored(scene):
    """The single-object scene with its object moved to the mirrored cell (centre point mirrored), or None for
    an object in the centre cell."""
    from pixart.data.emoji_vocab import position_of

    (obj,) = scene.objects
    if obj.position not in MIRROR:
        return None
    x, y = scene.width - obj.x, scene.height - obj.y
    moved = dataclasses.replace(obj, x=x, y=y, position=position_of(x, y, scene.width, scene.height))
    if moved.position != MIRROR[obj.position]:  # a centre exactly on a cell edge can mirror onto the same cell
        return None
    return dataclasses.replace(scene, objects=(moved,))


def contrast(diff: Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> tuple[Tensor, Tensor]:
    """Per sample, the mean of |diff|² inside its two boxes and the mean outside them: two (B,) tensors, from a
    (B, C, h, w) difference and boxes as (x0, y0, x1, y1) latent cells, two per sample in sample order."""
    energy = diff.float().pow(2).sum(dim=1)  # (B, h, w)
    inside = torch.zeros_like(energy, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        inside[i // 2, y0:y1, x0:x1] = True
    cells = inside.flatten(1).sum(dim=1)  # (B,)
    if bool((cells == 0).any()) or bool((cells == inside[0].numel()).any()):
        raise ValueError("the boxes must cover part of the latent, not all or none of it")
    total = energy.flatten(1).sum(dim=1)
    within = (energy * inside).flatten(1).sum(dim=1)
    return within / cells, (total - within) / (inside[0].numel() - cells)


@torch.no_grad()
def clean_estimates(pipe, captions: list[str], xt: Tensor, t: int) -> Tensor:
    """The transformer's x̂_0 (B, C, h, w) for noisy latents xt at step t, with the captions (no guidance)."""
    from pixart.diffusion.losses import GaussianDiffusion

    diffusion = GaussianDiffusion.linear(1000)
    text = pipe.encode(captions)
    model = pipe.transformer
    steps = torch.full((len(xt),), t)
    param = next(model.parameters())
    out = model(xt.to(param.device, param.dtype), steps.to(param.device), text.embeds, text.mask)
    out = out[:, : xt.shape[1]].float().cpu()  # (B, C, h, w): ε or v
    eps = diffusion.eps_from_output(out, xt, steps, model.cfg.prediction)
    keep = diffusion.at("sqrt_acp", steps, xt)
    return (xt - diffusion.at("sqrt_one_minus_acp", steps, xt) * eps) / keep


def with_object(scene, name: str):
    """The single-object scene with its emoji replaced by the vocabulary's `name` (same place, size, background)."""
    from pixart.data.emoji_vocab import BY_NAME

    if name not in BY_NAME:
        examples = ", ".join(list(BY_NAME)[:6])
        raise ValueError(f"unknown emoji {name!r}; allowed are the vocabulary's {len(BY_NAME)} names, e.g. {examples}")
    entry = BY_NAME[name]
    (obj,) = scene.objects
    swapped = dataclasses.replace(obj, name=entry.name, hexcode=entry.hexcode, category=entry.category)
    return dataclasses.replace(scene, objects=(swapped,))


def probe(pipe, prompts, times: Sequence[int], *, seed: int = 0, object_name: str | None = None) -> list[dict]:
    """One row per t: {"t", "ratio", "ratio_scenes", "moved"} (see the module docstring) over the prompts.

    object_name: draw this emoji in every scene instead of the prompt's own (a model trained on one emoji).
    """
    from pixart.data.emoji import short_caption
    from pixart.diffusion.losses import GaussianDiffusion

    originals = [p.scene if object_name is None else with_object(p.scene, object_name) for p in prompts]
    pairs = [(s, m) for s in originals if (m := mirrored(s)) is not None]
    if not pairs:
        raise ValueError("no prompt has an object outside the centre cell")
    scenes = [s for pair in pairs for s in pair]  # A0, B0, A1, B1, ...
    real = scene_latents(pipe.vae, scenes)  # (2P, C, h, w)
    factor, side = pipe.vae.spatial_factor, tuple(real.shape[2:])
    boxes = [latent_box(s.objects[0].box, factor, side) for s in scenes]  # two per pair: A's place, B's
    real_in, real_out = contrast(real[0::2] - real[1::2], boxes)  # 2 x (P,)
    flat = real.flatten(2).median(dim=2).values[..., None, None].expand_as(real)  # the scenes' backgrounds
    diffusion = GaussianDiffusion.linear(1000)
    noise = torch.randn(real[0::2].shape, generator=torch.Generator().manual_seed(seed)).repeat_interleave(2, 0)
    captions = [short_caption(s) for s in scenes]
    rows = []
    for t in times:
        xt = diffusion.q_sample(flat, torch.full((len(flat),), t), noise)  # the same noise for both of a pair
        x0 = clean_estimates(pipe, captions, xt, t)
        inside, outside = contrast(x0[0::2] - x0[1::2], boxes)  # 2 x (P,)
        rows.append(
            {
                "t": t,
                "ratio": float((inside / outside).nanmean()),  # a pair the captions do not change at all: 0/0
                "ratio_scenes": float((real_in / real_out).mean()),
                "moved": float((inside / real_in).mean()),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pixart.demo.position_probe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(p, prompts=48)
    p.add_argument("--t", default="999,900,800", help="timesteps, comma-separated (default %(default)s)")
    p.add_argument("--object", help="draw this emoji in every scene instead of the prompt's own (e.g. sun)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"-n {args.n}: must be >= 1")
    try:
        times = parse_times(args.t)
    except ValueError as e:
        p.error(str(e).replace("--from-t", "--t"))
    if args.object is not None:
        from pixart.data.emoji_vocab import BY_NAME

        if args.object not in BY_NAME:
            p.error(f"--object {args.object!r}: not an emoji of the vocabulary (e.g. {', '.join(list(BY_NAME)[:6])})")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    print("| model | size | t | inside / outside, model | inside / outside, scenes | moved energy |")
    print("|---|---|---:|---:|---:|---:|")
    for model in args.models:
        try:
            pipe = load_pipeline(model, args)
        except (OSError, ValueError) as e:
            p.exit(2, f"python -m pixart.demo.position_probe: error: {e}\n")
        size = args.size or pipe.native_size
        prompts = single_object_prompts(args.n, size)
        for row in probe(pipe, prompts, times, seed=args.seed, object_name=args.object):
            print(f"| {model} | {size} | {row['t']} | {row['ratio']:.2f} | {row['ratio_scenes']:.2f} "
                  f"| {row['moved']:.3f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
