"""Denoising loss by bucket shape: does a model draw other shapes as well as it draws squares?

PixArt-Sigma's positional embeddings squeeze each axis of the token grid into the same range whatever its length
(`pixart.model.embeddings`), and the model has no aspect-ratio input, so a 320x192 grid and a 256x256 one give the
same embedding at the same relative place. To draw an emoji square in a wide picture the model must notice the
finer spacing across and draw narrower there. A model that has not learnt this draws its emoji stretched, and its
loss on non-square scenes stays well above its loss on square ones at large t, where the caption and the layout
decide the picture.

For each weights file and each bucket of the given caches: the first `n` samples of that bucket, fixed noise (seeded
by t) and a few fixed t; the MSE of the model's own target (ε or v, `cfg.prediction`), as the training loss reads it.
`ratio` is a bucket's mean MSE over the probed t divided by the square bucket's (1.0: shapes are as easy as squares).

    python -m pixart.demo.shape_probe runs/demo/dit-scratch-hires/final.safetensors \\
        --cache runs/demo/cache-pair-256-canon-v5 --cache runs/demo/cache-pair-256-canon-aspect-v5

prints one markdown table (`--out FILE` also writes it). `--picture FILE --vae DIR` also draws, for the first
non-square bucket, what each model makes of its first 4 scenes at t = 900: the scenes themselves in the top row,
then one row per weights file with the clean picture the model's prediction implies, decoded by the VAE.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pixart.demo.probe import parse_timesteps

logger = logging.getLogger(__name__)

TIMESTEPS = (200, 500, 800, 950)


def bucket_batches(caches: Sequence[str | Path], n: int = 32, max_tokens: int | None = None) -> dict[str, dict]:
    """{"WxH": batch} for every bucket in the caches: its first `n` samples, caches read in the order given."""
    from pixart.data.cache_read import CachedDataset, collate_cached

    samples: dict[str, list] = {}
    for cache in caches:
        ds = CachedDataset(cache, long_caption_ratio=0.0, max_tokens=max_tokens)
        for i, key in enumerate(ds.bucket_keys()):
            h, w = ds.bins[key]
            group = samples.setdefault(f"{w}x{h}", [])
            if len(group) < n:
                group.append(ds[i])
    return {label: collate_cached(group) for label, group in samples.items()}


@torch.no_grad()
def bucket_mse(
    model: Callable, batch: dict, timesteps: Sequence[int] = TIMESTEPS, prediction: str = "epsilon"
) -> list[float]:
    """The MSE of the model's target (ε, or v when `prediction` is "v") on `batch`, one value per t."""
    from pixart.diffusion.losses import GaussianDiffusion

    diffusion = GaussianDiffusion.linear(1000)
    out = []
    for t in timesteps:
        noise, tt, _, pred = _predict_noised(model, batch, t, diffusion)
        target = noise if prediction == "epsilon" else diffusion.velocity(batch["latent"], noise, tt)
        out.append(((pred - target) ** 2).mean().item())
    return out


def _predict_noised(model: Callable, batch: dict, t: int, diffusion) -> tuple[torch.Tensor, ...]:
    """(noise, t as a (B,) tensor, x_t, the model's prediction) for `batch` noised at t, with noise seeded by t."""
    x0 = batch["latent"]  # (B, C, h, w)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(t)))  # (B, C, h, w)
    tt = torch.full((len(x0),), int(t))
    xt = diffusion.q_sample(x0, tt, noise)
    pred = model(xt, tt, batch["caption"], batch["caption_mask"])[:, : x0.shape[1]]  # (B, C, h, w)
    return noise, tt, xt, pred


def is_square(label: str) -> bool:
    width, height = label.split("x")
    return width == height


def square_label(labels: Sequence[str]) -> str | None:
    """The first "WxH" label with W == H (the reference bucket of `ratio`), or None."""
    return next((s for s in labels if is_square(s)), None)


def probe(
    models: dict[str, tuple[Callable, str]], batches: dict[str, dict], timesteps: Sequence[int] = TIMESTEPS
) -> list[dict]:
    """One row per (model, bucket): {"weights", "bucket", "n", "mse_tT" for each t, "ratio"}.

    `models`: {name: (model, prediction)}; `ratio` is None when no bucket is square, inf when the square's MSE is 0
    and the bucket's is not.
    """
    square = square_label(list(batches))
    rows = []
    for name, (model, prediction) in models.items():
        means = {}
        for label, batch in batches.items():
            mses = bucket_mse(model, batch, timesteps, prediction)
            means[label] = sum(mses) / len(mses)
            row = {"weights": name, "bucket": label, "n": len(batch["latent"])}
            row.update({f"mse_t{t}": v for t, v in zip(timesteps, mses, strict=True)})
            rows.append(row)
        for row in rows[-len(batches) :]:
            row["ratio"] = None if square is None else _ratio(means[row["bucket"]], means[square])
    return rows


def _ratio(mse: float, square: float) -> float:
    if mse == square:
        return 1.0
    return mse / square if square > 0 else float("inf")


def markdown(rows: Sequence[dict], timesteps: Sequence[int] = TIMESTEPS) -> str:
    head = ["weights", "bucket", "n", *(f"t={t}" for t in timesteps), "ratio to square"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(timesteps) + 1)]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        cells = [r["weights"], r["bucket"], str(r["n"]), *(f"{r[f'mse_t{t}']:.4f}" for t in timesteps), ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def clean_estimates(model: Callable, batch: dict, t: int, prediction: str) -> torch.Tensor:
    """The clean latents (B, C, h, w) the model's prediction implies from `batch` noised at t (noise seeded by t)."""
    from pixart.diffusion.losses import GaussianDiffusion

    diffusion = GaussianDiffusion.linear(1000)
    _, tt, xt, pred = _predict_noised(model, batch, t, diffusion)
    eps = diffusion.eps_from_output(pred, xt, tt, prediction)
    return diffusion.at("sqrt_recip_acp", tt, xt) * xt - diffusion.at("sqrt_recipm1_acp", tt, xt) * eps


def picture(
    models: dict[str, tuple[Callable, str]],
    batch: dict,
    vae_dir: Path,
    scaling: float,
    shift: float = 0.0,
    t: int = 900,
):
    """A PIL image: the batch's scenes (top row), then each model's clean estimate at t, decoded, one row each."""
    import numpy as np
    from diffusers import AutoencoderKL
    from PIL import Image

    vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval()

    def row(latents: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            images = vae.decode(latents / scaling + shift).sample  # (B, 3, H, W) in [-1, 1]
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
        return np.concatenate(list(pixels), axis=1)  # (H, B*W, 3)

    rows = [row(batch["latent"])] + [row(clean_estimates(m, batch, t, p)) for m, p in models.values()]
    return Image.fromarray(np.concatenate(rows, axis=0))


def weights_name(path: Path) -> str:
    """runs/demo/dit-X/final.safetensors -> "dit-X/final"."""
    return f"{path.parent.name}/{path.stem}"


def _timesteps(text: str) -> tuple[int, ...]:
    try:
        return parse_timesteps(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixart.demo.shape_probe", description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", type=Path, help="transformer .safetensors files (final.safetensors)")
    parser.add_argument("--cache", action="append", required=True, help="feature cache to draw samples from (repeat)")
    parser.add_argument("-n", type=int, default=32, help="samples per bucket (default 32)")
    parser.add_argument(
        "--timesteps",
        type=_timesteps,
        default=",".join(map(str, TIMESTEPS)),
        help="comma-separated t (default %(default)s)",
    )
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--picture", type=Path, help="also draw the first non-square bucket's clean estimates (PNG)")
    parser.add_argument("--vae", type=Path, help="the VAE folder that decodes --picture (the caches' VAE)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"-n {args.n}: must be at least 1")
    if (args.picture is None) != (args.vae is None):
        parser.error("--picture and --vae go together: the picture is decoded by that VAE")
    for path in [*args.weights, *map(Path, args.cache), *([args.vae] if args.vae else [])]:
        if not path.exists():
            parser.error(f"{path} does not exist")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from pixart.checkpoint import load_transformer

    models = {}
    for path in args.weights:
        model = load_transformer(path, dtype=torch.float32).eval()
        models[weights_name(path)] = (model, model.cfg.prediction)
    max_tokens = max(m.cfg.max_tokens for m, _ in models.values())
    batches = bucket_batches(args.cache, args.n, max_tokens)
    shaped = [s for s in batches if not is_square(s)]
    if args.picture and not shaped:
        parser.error("--picture needs a non-square bucket in the caches")
    table = markdown(probe(models, batches, args.timesteps), args.timesteps)
    print(table, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    if args.picture:
        from pixart.data.cache_read import read_index

        vae = read_index(args.cache[0])["settings"]["vae"]
        first = {k: v[:4] for k, v in batches[shaped[0]].items() if isinstance(v, torch.Tensor)}
        args.picture.parent.mkdir(parents=True, exist_ok=True)
        image = picture(models, first, args.vae, float(vae["scaling_factor"]), float(vae.get("shift_factor", 0.0)))
        image.save(args.picture)
        logger.info("wrote %s (bucket %s, t = 900)", args.picture, shaped[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
