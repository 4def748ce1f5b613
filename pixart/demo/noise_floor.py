"""How good a model's ε is at each noise level, next to the guess that knows nothing about the image.

At high t the noisy latent is almost all noise, so ε ≈ x_t / sqrt(1 - ᾱ_t): the guess "x_0 = 0" (`trivial`) is
already close, and a sampler turns the model's ε into its estimate of the clean image, x̂_0 = (x_t - sqrt(1 - ᾱ_t)
ε̂) / sqrt(ᾱ_t), which multiplies every error of ε̂ by sqrt((1 - ᾱ_t) / ᾱ_t) (about 157 at t = 999 on PixArt's
linear schedule). The first sampler steps start from there, and decide the image's large shapes and colours. This
prints, for fixed cached samples and fixed noise, the ε-MSE of the model (of the ε its v implies, for a v-prediction
model) and of the trivial guess and the RMS error of the model's x̂_0, so that a model whose ε is worse than the
trivial guess at high t (an x̂_0 further off than guessing zero) shows:

    python -m pixart.demo.noise_floor runs/demo/dit-base/final.safetensors --cache runs/demo/cache-128
"""

from __future__ import annotations

import argparse
import logging

import torch

from pixart.diffusion.losses import GaussianDiffusion

logger = logging.getLogger(__name__)

TIMESTEPS = (100, 300, 500, 700, 800, 900, 950, 999)


@torch.no_grad()
def noise_floor(model: torch.nn.Module, batch: dict, timesteps=TIMESTEPS, prediction: str = "epsilon") -> list[dict]:
    """One row per t: {"t", "mse_trivial", "mse_model", "x0_rmse_model", "x0_rms", "x0_rmse_background",
    "x0_rmse_model_background", "x0_rmse_model_detail"} on the batch's latents. `x0_rmse_background` is the error
    of an x̂_0 that is each latent's own flat background (its per-channel median): a model whose x̂_0 error is not
    below it draws nothing of the objects at that t. The model's x̂_0 error splits into the error of its flat
    background (`x0_rmse_model_background`: its per-channel median against the latent's, RMS over samples and
    channels) and of what is left (`x0_rmse_model_detail`: x̂_0 minus its median against the latent minus its own);
    the latter is to be read against `x0_rmse_background`, the detail error of drawing none.

    `prediction` is what the model outputs ("epsilon" or "v", its `cfg.prediction`); a v is read as the ε it implies.
    """
    diffusion = GaussianDiffusion.linear(1000)
    x0, caption, mask = batch["latent"], batch["caption"], batch["caption_mask"]  # (B, C, h, w), (B, L, D), (B, L)
    background = x0.flatten(2).median(dim=-1).values[..., None, None]  # (B, C, 1, 1)
    background_rmse = (x0 - background).pow(2).mean().sqrt().item()
    rows = []
    for tv in timesteps:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(tv)))
        t = torch.full((len(x0),), int(tv))
        xt = diffusion.q_sample(x0, t, noise)
        keep = diffusion.tables["sqrt_acp"][int(tv)].float() ** 2  # ᾱ_t
        trivial = xt / (1 - keep).sqrt()  # ε if x_0 were 0
        out = model(xt, t, caption, mask)[:, : x0.shape[1]]  # (B, C, h, w): ε or v
        eps = diffusion.eps_from_output(out, xt, t, prediction)
        mse_model = ((eps - noise) ** 2).mean().item()
        x0_hat = (xt - (1 - keep).sqrt() * eps) / keep.sqrt()  # (B, C, h, w)
        background_hat = x0_hat.flatten(2).median(dim=-1).values[..., None, None]  # (B, C, 1, 1)
        rows.append(
            {
                "t": int(tv),
                "mse_trivial": ((trivial - noise) ** 2).mean().item(),
                "mse_model": mse_model,
                "x0_rmse_model": (mse_model * (1 - keep) / keep).sqrt().item(),  # x̂_0 error from the ε error
                "x0_rms": x0.pow(2).mean().sqrt().item(),
                "x0_rmse_background": background_rmse,
                "x0_rmse_model_background": (background_hat - background).pow(2).mean().sqrt().item(),
                "x0_rmse_model_detail": ((x0_hat - background_hat) - (x0 - background)).pow(2).mean().sqrt().item(),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    from pixart.checkpoint import load_transformer
    from pixart.demo.probe import probe_batch

    parser = argparse.ArgumentParser(prog="python -m pixart.demo.noise_floor", description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="transformer weights (a .safetensors file or a checkpoint folder's file)")
    parser.add_argument("--cache", required=True, help="feature cache to draw samples from (the model's own scale)")
    parser.add_argument("-n", type=int, default=64, help="samples (default 64)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model = load_transformer(args.weights, dtype=torch.float32).eval()
        batch = probe_batch(args.cache, args.n, model.cfg.max_tokens)
    except (OSError, ValueError) as e:
        parser.exit(2, f"python -m pixart.demo.noise_floor: error: {e}\n")
    rows = noise_floor(model, batch, prediction=model.cfg.prediction)
    first = rows[0]
    logger.info(
        "%s: %d samples, x_0 RMS %.2f, x̂_0 RMS error of the flat background alone %.2f",
        args.weights, len(batch["latent"]), first["x0_rms"], first["x0_rmse_background"],
    )  # fmt: skip
    logger.info("    t   ε-MSE trivial   ε-MSE model   x̂_0 RMS error of the model: all / background / detail")
    for r in rows:
        flag = "  <- worse than guessing x_0 = 0" if r["mse_model"] > r["mse_trivial"] else ""
        values = (r["t"], r["mse_trivial"], r["mse_model"], r["x0_rmse_model"], r["x0_rmse_model_background"])
        logger.info("%5d   %13.5f   %11.5f   %8.2f / %.2f / %.2f%s", *values, r["x0_rmse_model_detail"], flag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
