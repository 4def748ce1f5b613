"""Caption reliance of a training run: how much each checkpoint's ε-prediction gains from the right caption.

For fixed cached samples, fixed noise and a few fixed timesteps, the ε-MSE of the raw weights (of the ε a
v-prediction model implies, for those) is measured twice:
with each sample's own caption, and with the captions rolled by one place (every image gets another image's
caption; same tokens, same masks, only the pairing is wrong). The relative difference is the gain:

    gain = (mse(shuffled) - mse(true)) / mse(true)

A model that ignores its caption scores 0 (up to noise, about ±0.3% with 64 samples), one that uses it scores
clearly above. Prompt adherence at sampling time needs this; the ε loss alone does not show it, because most of
it comes from small t, where the noisy image already says everything the caption could.

    python -m pixart.demo.probe runs/demo/dit-base            # every checkpoint not yet in caption-gain.csv
    python -m pixart.demo.probe runs/demo/dit-base --timesteps 480,651,819   # -> caption-gain-t480-651-819.csv

One row per checkpoint is appended to RUN/caption-gain.csv (step, then gain_tT, mse_true_tT, mse_shuffled_tT for
each probed t), and RUN/caption-gain.png plots the gains against the step. Other timesteps go to their own
caption-gain-tA-B-C.csv/png. A run on differently scaled latents needs other t for the same noise level: scaling
the latents by k multiplies every SNR by k², so e.g. t = 480/651/819 on the demo's rescaled latents (k = 2.5) match
the SNR that t = 300/500/700 had on the first scale.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections import Counter
from pathlib import Path

import torch

from pixart.train.state import list_checkpoints

logger = logging.getLogger(__name__)

TIMESTEPS = (300, 500, 700)


def fields(timesteps: tuple[int, ...] = TIMESTEPS) -> list[str]:
    return ["step"] + [f"{k}_t{t}" for t in timesteps for k in ("gain", "mse_true", "mse_shuffled")]


def output_name(timesteps: tuple[int, ...] = TIMESTEPS) -> str:
    """`caption-gain` for the default timesteps, `caption-gain-tA-B-C` for others."""
    return "caption-gain" if tuple(timesteps) == TIMESTEPS else "caption-gain-t" + "-".join(map(str, timesteps))


def parse_timesteps(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 <= v < 1000 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"bad --timesteps {text!r}: expected distinct integers in 0..999, comma-separated")
    return values


def probe_batch(cache: str | Path, n: int = 64, max_tokens: int | None = None) -> dict:
    """The first `n` samples of the cache's most common bucket: latents with fixed noise, captions, masks."""
    from pixart.data.cache_read import CachedDataset, collate_cached

    ds = CachedDataset(cache, long_caption_ratio=0.0, max_tokens=max_tokens)
    keys = ds.bucket_keys()
    bucket = Counter(keys).most_common(1)[0][0]
    indices = [i for i, k in enumerate(keys) if k == bucket][:n]
    return collate_cached([ds[i] for i in indices])


@torch.no_grad()
def caption_gain(model: torch.nn.Module, batch: dict, timesteps=TIMESTEPS, prediction: str = "epsilon") -> list[dict]:
    """One row per timestep: ε-MSE with the true captions and with the captions rolled by one sample.

    `prediction` is what the model outputs ("epsilon" or "v", its `cfg.prediction`); a v is read as the ε it implies.
    """
    from pixart.diffusion.losses import GaussianDiffusion

    diffusion = GaussianDiffusion.linear(1000)
    x0, caption, mask = batch["latent"], batch["caption"], batch["caption_mask"]  # (B, C, h, w), (B, L, D), (B, L)
    if len(x0) < 2:
        raise ValueError("the probe needs at least 2 samples in one bucket (it pairs images with other captions)")
    rolled = torch.roll(torch.arange(len(x0)), 1)
    rows = []
    for tv in timesteps:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(tv)))
        t = torch.full((len(x0),), int(tv))
        xt = diffusion.q_sample(x0, t, noise)
        c = x0.shape[1]
        mses = []
        for order in (slice(None), rolled):  # the true pairing, then every image with another's caption
            out = model(xt, t, caption[order], mask[order])[:, :c]  # (B, C, h, w): ε or v
            eps = diffusion.eps_from_output(out, xt, t, prediction)
            mses.append(((eps - noise) ** 2).mean().item())
        true, shuffled = mses
        gain = 100 * (shuffled - true) / true
        rows.append({"t": int(tv), "mse_true": true, "mse_shuffled": shuffled, "gain_pct": gain})
    return rows


def probe_run(
    run_dir: str | Path, cache: str | Path | None = None, n: int = 64, timesteps: tuple[int, ...] = TIMESTEPS
) -> list[dict]:
    """Probe each checkpoint of `run_dir` that its CSV (`output_name(timesteps)`.csv) does not have yet; returns
    the new rows ({"step", "gain_tT", "mse_true_tT", "mse_shuffled_tT"} for each probed T)."""
    from pixart.checkpoint import load_transformer

    run = Path(run_dir)
    config = json.loads((run / "config.json").read_text())
    cache = cache or config["data"]["cache"]
    if not cache:
        raise ValueError(f"{run} trained without a feature cache: pass --cache")
    timesteps = tuple(int(t) for t in timesteps)
    out = run / f"{output_name(timesteps)}.csv"
    done = set()
    if out.is_file():
        with out.open(newline="") as f:
            done = {int(r["step"]) for r in csv.DictReader(f)}
    todo = [p for p in list_checkpoints(run / "checkpoints") if int(p.name.split("-")[1]) not in done]
    if not todo:
        return []
    batch = None
    new = []
    for ckpt in todo:
        step = int(ckpt.name.split("-")[1])
        model = load_transformer(ckpt / "transformer.safetensors", dtype=torch.float32)
        batch = batch or probe_batch(cache, n, model.cfg.max_tokens)
        rows = caption_gain(model, batch, timesteps, model.cfg.prediction)
        logger.info("step %d: %s", step, ", ".join(f"t={r['t']} gain {r['gain_pct']:+.2f}%" for r in rows))
        row = {"step": step}
        for r in rows:
            for key, name in (("gain", "gain_pct"), ("mse_true", "mse_true"), ("mse_shuffled", "mse_shuffled")):
                row[f"{key}_t{r['t']}"] = r[name]
        new.append(row)
    write_header = not out.is_file()
    with out.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields(timesteps))
        if write_header:
            w.writeheader()
        for r in new:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    from pixart.demo._common import plot_curves

    gains = [f"gain_t{t}" for t in timesteps]
    title = "caption gain, % (shuffled vs true caption)"
    plot_curves(out, out.with_suffix(".png"), gains, title=title, log_y=False, smooth=1)
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixart.demo.probe", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a `pixart train` output folder (has config.json and checkpoints/)")
    parser.add_argument("--cache", help="feature cache to draw samples from (default: the run's data.cache)")
    parser.add_argument("-n", type=int, default=64, help="samples (default 64)")
    parser.add_argument(
        "--timesteps", default=",".join(map(str, TIMESTEPS)), help="comma-separated t to probe (default %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        timesteps = parse_timesteps(args.timesteps)
    except ValueError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    probe_run(args.run_dir, args.cache, args.n, timesteps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
