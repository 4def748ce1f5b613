"""Experiment: does the demo DiT learn the noisy end of the schedule with ε-prediction, and with v-prediction?

    python scripts/v_vs_eps.py                 # 8 scenes, 500 steps per arm, ~5 min on 2 cores
    python scripts/v_vs_eps.py --steps 1000 --root /tmp/vexp
    python scripts/v_vs_eps.py --arms v --steps 1250 --eval-every 250   # how fast v memorises the 8 scenes

Renders 8 emoji scenes at 128² (seed 5), encodes them with the demo T5 and VAE (runs/demo/export), and trains the
demo base DiT (configs/demo/base.toml's model) from the same initial weights on them twice, with the same batches,
noise and optimizer: once to predict ε (the recipe so far) and once to predict v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x_0
(Salimans & Ho 2022). Plain MSE on the 4 predicted channels, no variance term, no caption dropout: the two arms
differ only in the target. Then, for each arm:

- the RMS error of the clean latent x̂_0 implied by the model at t = 500 ... 999 (as `pixart.demo.noise_floor`),
  next to the ε-MSE of the guess "x_0 = 0";
- a 50-step DDIM sample from pure noise with each scene's own caption, its latent MSE to the scene, and ROOT/ARM.png
  (top row: the scenes through the VAE; bottom row: the samples).

Not a test: a model that memorises 8 scenes should be able to draw them back, and this shows which target lets it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def prepare(root: Path) -> Path:
    from pixart.data.buckets import bins_for
    from pixart.data.cache import T5AndVAE, prepare_cache
    from pixart.data.emoji import export_dataset

    export = REPO / "runs" / "demo" / "export"
    export_dataset(root / "data", 8, seed=5, sizes=((128, 128),))
    encoders = T5AndVAE(export, export / "vae", max_tokens=120)
    prepare_cache(root / "data", root / "cache", encoders, bins=bins_for(128), max_tokens=120, shard_size=64)
    return root / "cache"


def run_arm(arm: str, cache: Path, steps: int, root: Path, eval_every: int = 0) -> dict:
    from PIL import Image

    from pixart.data.cache_read import CachedDataset, collate_cached
    from pixart.diffusion.losses import linear_betas
    from pixart.model.attention import trim_caption_padding
    from pixart.train.config import load_train_config
    from pixart.train.loop import build_model
    from pixart.vae import VAE

    cfg = load_train_config(REPO / "configs" / "demo" / "base.toml", [f"data.cache={cache}"])
    torch.manual_seed(0)
    model = build_model(cfg)
    data = CachedDataset(cache, max_tokens=120, long_caption_ratio=0.0)
    keep = torch.cumprod(1 - linear_betas(1000).double(), 0).float()  # ᾱ_t
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    gen = torch.Generator().manual_seed(1)

    def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = collate_cached([data[i] for i in range(len(data))])
        caption, mask = trim_caption_padding(b["caption"], b["caption_mask"])
        return b["latent"], caption, mask

    def eps_of(xt: torch.Tensor, t: torch.Tensor, caption, mask) -> torch.Tensor:
        out = model(xt, t, caption, mask)[:, : xt.shape[1]]
        if arm == "eps":
            return out
        a = keep[t].view(-1, 1, 1, 1)
        return a.sqrt() * out + (1 - a).sqrt() * xt  # ε from v and x_t

    @torch.no_grad()
    def error_rows() -> list[tuple[int, float, float, float]]:
        """(t, ε-MSE of the guess x_0 = 0, ε-MSE of the model, RMS error of its x̂_0) on the 8 scenes, fixed noise."""
        x0, caption, mask = batch()
        rows = []
        for tv in (500, 800, 900, 950, 999):
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(tv))
            t, a = torch.full((len(x0),), tv), keep[tv]
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            mse = (eps_of(xt, t, caption, mask) - noise).pow(2).mean()
            trivial = (xt / (1 - a).sqrt() - noise).pow(2).mean()
            rows.append((tv, trivial.item(), mse.item(), (mse * (1 - a) / a).sqrt().item()))
        return rows

    start = time.time()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = cfg.optim.lr * min(1.0, step / 50)
        data.set_epoch(step)
        x0, caption, mask = batch()
        t = torch.randint(0, 1000, (len(x0),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = keep[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = noise if arm == "eps" else a.sqrt() * noise - (1 - a).sqrt() * x0
        loss = ((model(xt, t, caption, mask)[:, : x0.shape[1]] - target) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad()
        if eval_every and step % eval_every == 0:  # eval mode draws no random numbers: training is unchanged
            model.eval()
            errors = ", ".join(f"{tv}: {x0_err:.3f}" for tv, _, _, x0_err in error_rows())
            print(f"{arm} step {step}: x̂_0 RMS error at t = {errors}", flush=True)
            model.train()
    seconds = time.time() - start
    model.eval()
    data.set_epoch(0)
    x0, caption, mask = batch()
    result = {"arm": arm, "seconds": seconds, "x0_rms": x0.pow(2).mean().sqrt().item(), "rows": error_rows()}
    with torch.no_grad():
        times = torch.linspace(999, 0, 50).round().long()
        x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
        for i, tv in enumerate(times):  # DDIM, eta = 0
            a = keep[tv]
            eps = eps_of(x, torch.full((len(x),), int(tv)), caption, mask)
            x0_hat = (x - (1 - a).sqrt() * eps) / a.sqrt()
            a_next = keep[times[i + 1]] if i + 1 < len(times) else torch.tensor(1.0)
            x = a_next.sqrt() * x0_hat + (1 - a_next).sqrt() * eps
        result["sample_mse"] = (x - x0).pow(2).mean().item()
        vae = VAE.from_folder(cfg.data.vae if Path(cfg.data.vae).is_absolute() else REPO / cfg.data.vae)
        canvas = Image.new("RGB", (128 * len(x0), 256))
        for row, latents in enumerate((x0, x)):
            images = vae.decode(latents)
            for col in range(len(x0)):
                pixels = ((images[col].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).byte().numpy()
                canvas.paste(Image.fromarray(pixels), (128 * col, 128 * row))
        canvas.save(root / f"{arm}.png")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/v_vs_eps", help="working folder (scenes, cache, sample grids)")
    p.add_argument("--steps", type=int, default=500, help="training steps per arm (batch: all 8 scenes)")
    p.add_argument("--arms", default="eps,v", help="which targets to train, comma-separated (default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=0, help="also print the x̂_0 errors every N steps")
    args = p.parse_args()
    arms = args.arms.split(",")
    if not arms or any(a not in ("eps", "v") for a in arms):
        p.error(f"--arms {args.arms!r}: allowed are eps, v")
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    cache = prepare(root)
    for arm in arms:
        r = run_arm(arm, cache, args.steps, root, args.eval_every)
        print(f"{arm}: {args.steps} steps in {r['seconds']:.0f} s; latents' RMS {r['x0_rms']:.2f}")
        print("    t   ε-MSE guess x_0 = 0   ε-MSE model   x̂_0 RMS error")
        for tv, trivial, mse, x0_err in r["rows"]:
            print(f"{tv:5d}   {trivial:19.5f}   {mse:11.5f}   {x0_err:13.2f}")
        print(f"DDIM-50 from noise vs the scenes: latent MSE {r['sample_mse']:.2f}; images: {root / (arm + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
