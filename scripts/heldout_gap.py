"""Experiment: has a demo DiT stopped learning, or started to memorise its few thousand 256 px scenes?

    python scripts/heldout_gap.py runs/demo/dit-draw-hires/final.safetensors
    python scripts/heldout_gap.py MODEL --train-cache runs/demo/cache-lesson-256-v2 --seed 77 --n 128

Renders N one-emoji 256 px scenes the model never saw (a seed no build stage uses), encodes them with the second
T5 and the demo VAE (`pixart prepare`'s cache, in a scratch folder), then measures the model's ε-MSE (of the ε its
v implies) at fixed timesteps and fixed noise on the first 64 of them and on the first 64 scenes of the training
cache. Held-out loss far above the training loss: memorising (more scenes would help); about equal: not learning
more from these scenes (more steps or more capacity would).

Not a test: a measurement for docs/demo-model.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TIMESTEPS = (100, 300, 500, 700, 900)


def eps_mse(model, batch: dict, timesteps=TIMESTEPS, batch_size: int = 16) -> list[float]:
    """ε-MSE per timestep on `batch` (a `probe_batch`), noise seeded by the timestep."""
    import torch

    from pixart.diffusion.losses import GaussianDiffusion

    diffusion = GaussianDiffusion.linear(1000)
    x0, caption, mask = batch["latent"], batch["caption"], batch["caption_mask"]
    out = []
    for tv in timesteps:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(tv))
        t = torch.full((len(x0),), tv)
        xt = diffusion.q_sample(x0, t, noise)
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(x0), batch_size):
                s = slice(i, i + batch_size)
                pred = model(xt[s], t[s], caption[s], mask[s])[:, : x0.shape[1]]
                eps = diffusion.eps_from_output(pred, xt[s], t[s], model.cfg.prediction)
                total += ((eps - noise[s]) ** 2).sum().item()
        out.append(total / noise.numel())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="transformer checkpoint")
    parser.add_argument("--train-cache", default="runs/demo/cache-lesson-256-v2", help="a cache it trained on")
    parser.add_argument("--export", default="runs/demo/export-v2", help="text encoder + vae/ folder of that cache")
    parser.add_argument("--seed", type=int, default=77, help="held-out scenes' seed (default 77: no stage's)")
    parser.add_argument("--n", type=int, default=128, help="held-out scenes to render (default 128)")
    parser.add_argument("--side", type=int, default=256)
    args = parser.parse_args(argv)
    import torch

    from pixart.checkpoint import load_transformer
    from pixart.data.buckets import bins_for
    from pixart.data.cache import T5AndVAE, prepare_cache
    from pixart.data.emoji import export_dataset
    from pixart.demo.probe import probe_batch

    torch.manual_seed(0)
    model = load_transformer(args.model, dtype=torch.float32).eval()
    export = Path(args.export)
    with tempfile.TemporaryDirectory() as tmp:
        data, cache = Path(tmp) / "data", Path(tmp) / "cache"
        export_dataset(data, args.n, seed=args.seed, sizes=((args.side, args.side),), max_objects=1)
        encoders = T5AndVAE(export, export / "vae", max_tokens=120)
        prepare_cache(data, cache, encoders, bins=bins_for(args.side), max_tokens=120, batch_size=16)
        rows = {
            "training scenes": eps_mse(model, probe_batch(args.train_cache, 64, model.cfg.max_tokens)),
            "held-out scenes": eps_mse(model, probe_batch(cache, 64, model.cfg.max_tokens)),
        }
    print("| scenes (64 each) | " + " | ".join(f"t = {t}" for t in TIMESTEPS) + " |")
    print("|---|" + "---:|" * len(TIMESTEPS))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    gap = [h / t - 1 for h, t in zip(rows["held-out scenes"], rows["training scenes"], strict=True)]
    print("| held-out / training - 1 | " + " | ".join(f"{100 * g:+.0f}%" for g in gap) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
