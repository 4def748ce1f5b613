"""Experiment: from which noise level on does a demo DiT finish a scene it is given?

    python scripts/sdedit_probe.py pixart/assets/demo                    # the package, 100 prompts
    python scripts/sdedit_probe.py runs/demo/dit-draw-mid/final.safetensors --export runs/demo/export-v2

For each `pixart eval` prompt (the same seeded set at the model's native size), the true scene is rendered, encoded
with the VAE, noised to the timestep where the sampler's schedule has `k` of its steps left (SDEdit: Meng et al.
2022), and sampled from there with the prompt, the default sampler and guidance; the image is scored by `pixart
eval`'s scorer. k = 20 of 20 is ordinary generation (from pure noise). Where the pass rate climbs from the
generation's to the VAE round trip's (`pixart eval --self-test`) says at which noise levels the model fails: laying
out the scene (high t), drawing the emoji (middle t) or finishing their outlines (low t). Noise is seeded per
prompt, so two models see the same noised scenes.

Not a test: a measurement for docs/demo-model.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="transformer checkpoint or package folder")
    p.add_argument("--export", default=None, help="T5 + vae/ folder, for a bare transformer checkpoint")
    p.add_argument("--prompts", type=int, default=100, help="the first N eval prompts")
    p.add_argument("--left", default="20,16,12,8,4", help="sampler steps left at the start, comma-separated")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--grid", default=None, help="write the first 4 scenes at each start here (PNG)")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from pixart.data.emoji import render_scene
    from pixart.diffusion import Conditioning, make_denoiser
    from pixart.diffusion.schedules import make_scheduler
    from pixart.eval.prompts import prompt_set
    from pixart.eval.run import Result, summarize
    from pixart.eval.scorer import score_image
    from pixart.pipeline import Text2Image, to_pil

    torch.set_num_threads(2)
    lefts = [int(k) for k in args.left.split(",")]
    if any(not 1 <= k <= args.steps for k in lefts):
        raise SystemExit(f"--left {args.left}: each must be in [1, {args.steps}]")
    vae = str(Path(args.export) / "vae") if args.export else None
    pipe = Text2Image.from_pretrained(args.model, text_encoder=args.export, vae=vae)
    side = pipe.native_size
    prompts = prompt_set(args.prompts, side, side)
    text = pipe.encode([q.prompt for q in prompts])
    pixels = [np.asarray(render_scene(q.scene).convert("RGB"), np.float32) / 127.5 - 1 for q in prompts]
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)  # (N, 3, H, W)
    with torch.no_grad():
        clean = torch.cat([pipe.vae.model.encode(part).latent_dist.mean for part in x.split(10)])  # (N, C, h, w)
    clean = clean * pipe.vae.scaling_factor
    seeded = [torch.Generator().manual_seed(i) for i in range(len(x))]  # one per prompt
    noise = torch.cat([torch.randn(clean[:1].shape, generator=g) for g in seeded])  # (N, C, h, w)

    rows = []
    for left in lefts:
        results = []
        for start in range(0, len(prompts), 10):
            part = slice(start, start + 10)
            n = len(prompts[part])
            cond = Conditioning(
                text.embeds[part], text.mask[part],
                text.negative_embeds.expand(n, -1, -1), text.negative_mask.expand(n, -1),
            )  # fmt: skip
            denoise = make_denoiser(pipe.transformer, cond, args.cfg)
            scheduler = make_scheduler("dpm-solver++", pipe.sampling_schedule())
            scheduler.set_timesteps(args.steps)
            timesteps = scheduler.timesteps[args.steps - left :]
            with torch.no_grad():
                if left == args.steps:
                    z = noise[part] * scheduler.init_noise_sigma  # ordinary generation
                else:
                    z = scheduler.add_noise(clean[part], noise[part], timesteps[:1])  # (n, C, h, w)
                for t in timesteps:
                    z = scheduler.step(denoise(z, t), t, z, return_dict=False)[0]
                images = to_pil(pipe.decode(z))
            for q, image in zip(prompts[part], images, strict=True):
                results.append(Result(q, image, score_image(image, q.scene, q.caption)))
        s = summarize(results)
        kinds = ", ".join(f"{k} {v['passed']}/{v['images']}" for k, v in s["kinds"].items())
        start_t = int(timesteps[0])
        print(f"{left:2d} of {args.steps} steps left (from t = {start_t}): overall {s['overall']:.2f} ({kinds})")
        rows.append([r.image for r in results[:4]])
    if args.grid:
        w, h = rows[0][0].size
        grid = Image.new("RGB", (w * len(rows[0]), h * len(rows)), "white")
        for i, row in enumerate(rows):
            for j, image in enumerate(row):
                grid.paste(image, (j * w, i * h))
        grid.save(args.grid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
