"""The demo VAE: a small diffusers `AutoencoderKL` trained from scratch on rendered emoji-world scenes.

Architecture: SDXL's layout shrunk -- 4 encoder/decoder blocks (8x down), 4 latent channels, one ResNet per encoder
block (two per decoder block, as diffusers builds it), widths (16, 32, 64, 128), GroupNorm with one group (over
all channels: the closest to SD's 4-channel groups that the 16-wide full-resolution layers allow, and never an
instance norm, which would erase the colour of flat backgrounds), no mid-block attention. On one CPU thread the
full-resolution 32-wide variant ran 3.5x slower per pixel. About 2.6M parameters, ~5 MB in fp16.

Init (`init_weights`) matters more than anything else here: with diffusers' default (PyTorch's) init the first
run spent 3,600 steps at 15 dB with every background collapsed to one of a few colours; variance-preserving
convs and identity-initialised ResNet blocks gave 18 dB after 950 steps with the colours right.

Training: scenes rendered on the fly from seeds, cropped to 64-128 px pieces (several aspect ratios) of scenes
rendered at 128-256 px, so the data is unlimited and a function of the step alone: exact resume after kill -9
needs only weights + optimizer + step. Loss per image = L1 + `l2_weight` * MSE + `edge_weight` * L1 of finite
differences (keeps outlines crisp; LPIPS cannot be downloaded here) + `kl_weight` * KL / pixels (the LDM recipe's
1e-6 scale: the KL only keeps the latent from drifting). AdamW 5e-4, warm-up + cosine LR, grad-norm clip 1. The
held-out PSNR is measured on whole scenes from another seed with fp16-rounded weights (what ships), decoding the
posterior mode and quantising to 8 bits; the shipped run's numbers are in runs/demo/vae/eval.json and the README.

`scaling_factor` (`latent_scale`) is 1 / the RMS of the latents' *detail*: each latent minus its own per-channel
median, i.e. with the flat background colour taken out. SD's rule, 1 / std of the whole latent, is dominated here by
the background colours (a plain colour is most of every scene) and left the emoji at 0.4 of unit scale: their
signal-to-noise ratio was 1/6.2 of the schedule's at every timestep, so they were buried in noise above t = 116 and
a DiT trained 8,000 steps drew the backgrounds but no emoji. Scaling the latents up is a shift of the noise
schedule's log-SNR (Chen 2023, "On the importance of noise scheduling for diffusion models"; Hoogeboom et al. 2023,
"simple diffusion"), and with the factor stored as `scaling_factor` every pipeline applies it unchanged.

    python -m pixart.demo.vae --out runs/demo/export --run-dir runs/demo/vae                   # writes export/vae
    python -m pixart.demo.vae --out runs/demo/export --run-dir runs/demo/vae --resume          # after any stop
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL
from torch import Tensor

from pixart.data.emoji import make_scene, scene_seed
from pixart.demo._common import (
    CHECKPOINT,
    CsvLog,
    atomic_torch_save,
    cosine_lr,
    folder_mb,
    load_checkpoint,
    plot_curves,
    replace_dir,
    run_trainer,
)

logger = logging.getLogger(__name__)

Size = tuple[int, int]  # (width, height)


# ---- config -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VAETrainConfig:
    """Everything that defines a VAE run; saved as a plain dict in the checkpoint and `train_config.json`."""

    # model
    block_out_channels: tuple[int, ...] = (16, 32, 64, 128)
    layers_per_block: int = 1
    norm_num_groups: int = 1  # one group: flat backgrounds keep their colour (see the module docstring)
    latent_channels: int = 4
    mid_block_attention: bool = False
    # data: each step draws one image shape (w, h) from `crops` and batch_pixels // (w * h) images of it: whole
    # scenes rendered at that size, or crops of scenes rendered at a larger size from scene_sizes when given
    crops: tuple[Size, ...] = ((64, 64), (96, 64), (64, 96), (96, 96), (128, 128), (128, 96), (96, 128))
    scene_sizes: tuple[Size, ...] = (
        (128, 128),
        (160, 128),
        (128, 160),
        (192, 192),
        (256, 256),
        (256, 128),
        (128, 256),
    )
    batch_pixels: int = 2 * 128 * 128
    seed: int = 0
    # optimisation
    steps: int = 5000
    lr: float = 5e-4
    warmup: int = 100
    min_lr_frac: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    l2_weight: float = 1.0
    edge_weight: float = 0.5
    kl_weight: float = 1e-6
    init_logvar: float = -6.0  # posterior log-variance at init (see init_weights)
    # bookkeeping
    log_every: int = 10
    save_every_min: float = 4.0
    eval_seed: int = 1  # held-out scenes come from a different dataset seed than training (seed)
    eval_scenes: int = 16  # at each checkpoint, at eval_sizes[0]; the final eval uses final_eval_scenes
    final_eval_scenes: int = 128
    scale_scenes: int = 32  # training scenes (at eval_sizes[0]) encoded to measure the latent std
    eval_sizes: tuple[Size, ...] = ((256, 256), (320, 192), (192, 320))  # the first is the headline; others n // 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAETrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise KeyError(f"unknown VAE config keys {sorted(unknown)}")
        fix = {
            k: tuple(tuple(x) if isinstance(x, list) else x for x in v) for k, v in d.items() if isinstance(v, list)
        }
        return cls(**{**d, **fix})


def build_vae(cfg: VAETrainConfig, scaling_factor: float = 1.0) -> AutoencoderKL:
    """A fresh AutoencoderKL with the SDXL layout scaled down by `cfg` (8x down per len(block_out_channels) == 4)."""
    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=256,
        scaling_factor=scaling_factor,
        mid_block_add_attention=cfg.mid_block_attention,
        force_upcast=False,  # GroupNorm-only small VAE: fp16 decode is checked, not assumed broken like SDXL's
    )


def init_weights(vae: AutoencoderKL, logvar: float) -> None:
    """The demo VAE's init (diffusers' default is PyTorch's, which this replaces), in one place:

    1. Every conv variance-preserving (normal, std = 1 / sqrt(fan_in)), biases zero. PyTorch's default conv init
       has a variance gain of 1/3 per layer, so after the ~8 plain convs between latent and pixels (conv_in,
       upsamplers, channel-changing shortcuts) the colour signal is ~1% of the bias pattern, and the decoder spent
       thousands of steps at one flat colour per image (measured: a decoder fed the exact 8x8-average colours
       stayed at 12 dB for 75 steps with the default init, 17 dB with this one).
    2. The last conv of every ResNet block zero, so each block starts as the identity (a clean signal path).
    3. A near-deterministic posterior: the log-variance half of quant_conv zero, its bias = `logvar`. Otherwise
       the posterior std starts at ~1 while encoder means differ by ~0.1 between images; at exp(logvar / 2) = 0.05
       the signal gets through from step 0 and the (tiny) KL term lets the variance grow where it costs nothing.
    """
    from diffusers.models.resnet import ResnetBlock2D

    c = vae.config.latent_channels
    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.normal_(module.weight, std=module.weight[0].numel() ** -0.5)
                torch.nn.init.zeros_(module.bias)
        for module in vae.modules():
            if isinstance(module, ResnetBlock2D):
                torch.nn.init.zeros_(module.conv2.weight)
                torch.nn.init.zeros_(module.conv2.bias)
        vae.quant_conv.weight[c:].zero_()
        vae.quant_conv.bias[c:].fill_(logvar)


# ---- data -------------------------------------------------------------------------------------------------------


def to_tensor(images: Sequence[Any]) -> Tensor:
    """PIL RGB images of one size -> (B, 3, H, W) float in [-1, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])  # (B, H, W, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def training_batch(cfg: VAETrainConfig, step: int) -> Tensor:
    """The batch of `step`: a pure function of (cfg, step), so resuming replays the same data order.

    Scene i of the stream is `make_scene(scene_seed(cfg.seed, step * 1000 + i), ...)`; a crop shape is drawn for
    the whole batch and each image is cropped at a random offset from a scene size that contains it.
    """
    rng = np.random.default_rng([cfg.seed, step])
    cw, ch = cfg.crops[int(rng.integers(len(cfg.crops)))]
    n = max(1, cfg.batch_pixels // (cw * ch))
    fits = [s for s in (*cfg.scene_sizes, (cw, ch)) if s[0] >= cw and s[1] >= ch]
    crops = []
    for i in range(n):
        sw, sh = fits[int(rng.integers(len(fits)))]
        image, _ = make_scene(scene_seed(cfg.seed, step * 1000 + i), sw, sh)
        x0, y0 = int(rng.integers(sw - cw + 1)), int(rng.integers(sh - ch + 1))
        crops.append(image.crop((x0, y0, x0 + cw, y0 + ch)))
    return to_tensor(crops)  # (B, 3, ch, cw)


def heldout_scenes(seed: int, n: int, size: Size) -> Tensor:
    """n whole scenes of dataset `seed` (never used for training when seed != cfg.seed): (n, 3, H, W) in [-1, 1]."""
    return to_tensor([make_scene(scene_seed(seed, i), *size)[0] for i in range(n)])


# ---- loss and metrics -------------------------------------------------------------------------------------------


def vae_loss(vae: AutoencoderKL, x: Tensor, cfg: VAETrainConfig, generator: torch.Generator) -> dict[str, Tensor]:
    """Reconstruction + edge + KL loss of one batch x (B, 3, H, W) in [-1, 1]; returns the terms and 'loss'."""
    post = vae.encode(x).latent_dist
    noise = torch.randn(post.mean.shape, generator=generator)  # (B, C, H/8, W/8), seeded per step for exact resume
    y = vae.decode(post.mean + post.std * noise).sample  # (B, 3, H, W)
    l1 = (y - x).abs().mean()
    mse = (y - x).pow(2).mean()
    edge = sum(((d(y) - d(x)).abs().mean() for d in (_dx, _dy)), torch.zeros(()))
    kl = post.kl().mean() / x[0].numel()  # per-image KL sum over latent elements / pixel elements (LDM scale)
    loss = l1 + cfg.l2_weight * mse + cfg.edge_weight * edge + cfg.kl_weight * kl
    return {"loss": loss, "l1": l1, "mse": mse, "edge": edge, "kl": kl}


def _dx(t: Tensor) -> Tensor:
    return t[..., :, 1:] - t[..., :, :-1]


def _dy(t: Tensor) -> Tensor:
    return t[..., 1:, :] - t[..., :-1, :]


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, x: Tensor, batch: int = 4) -> Tensor:
    """Encode to the posterior mode and decode: (B, 3, H, W) in [-1, 1] -> same shape, clamped."""
    outs = [vae.decode(vae.encode(x[i : i + batch]).latent_dist.mode()).sample for i in range(0, len(x), batch)]
    return torch.cat(outs).clamp(-1, 1)


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Per-image PSNR in dB of 8-bit quantised images given in [-1, 1]: (B, 3, H, W) x2 -> (B,)."""
    qx, qy = (((t.clamp(-1, 1) + 1) * 127.5).round() for t in (x, y))
    mse = (qx - qy).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(255.0**2 / mse)


@torch.no_grad()
def latent_stats(vae: AutoencoderKL, x: Tensor, batch: int = 4) -> tuple[float, float, float]:
    """(mean, std, detail RMS) of posterior samples of x; the detail is each latent minus its own per-channel
    spatial median (the flat background colour)."""
    gen = torch.Generator().manual_seed(0)
    zs = [vae.encode(x[i : i + batch]).latent_dist.sample(gen) for i in range(0, len(x), batch)]
    z = torch.cat(zs)  # (N, C, h, w)
    return float(z.mean()), float(z.std()), detail_rms(z)


def detail_rms(z: Tensor) -> float:
    """RMS of latents (N, C, h, w) after subtracting each one's per-channel spatial median (its flat background)."""
    background = z.flatten(2).median(dim=2).values[:, :, None, None]  # (N, C, 1, 1)
    return float((z - background).pow(2).mean().sqrt())


def latent_scale(detail_rms: float) -> float:
    """The exported `scaling_factor`: unit RMS for the latents' detail (see the module docstring)."""
    return 1.0 / detail_rms


def shipped_copy(vae: AutoencoderKL) -> AutoencoderKL:
    """An fp32 copy whose weights went through fp16, i.e. what the exported folder holds."""
    copy = build_vae_like(vae)
    copy.load_state_dict({k: v.half().float() for k, v in vae.state_dict().items()})
    return copy.eval()


def build_vae_like(vae: AutoencoderKL) -> AutoencoderKL:
    return AutoencoderKL.from_config(vae.config)


def evaluate(vae: AutoencoderKL, cfg: VAETrainConfig, n: int) -> dict[str, float]:
    """Held-out PSNR with fp16-rounded weights: n whole scenes at eval_sizes[0], n // 4 at each other size.

    Returns {"psnr": headline, "psnr_WxH": per size}.
    """
    model = shipped_copy(vae)
    out = {}
    for i, size in enumerate(cfg.eval_sizes):
        x = heldout_scenes(cfg.eval_seed, n if i == 0 else max(1, n // 4), size)
        out[f"psnr_{size[0]}x{size[1]}"] = float(psnr(x, reconstruct(model, x)).mean())
    return {"psnr": next(iter(out.values())), **out}


# ---- checkpoint and export --------------------------------------------------------------------------------------


def export_vae(vae: AutoencoderKL, dst: Path, scaling_factor: float) -> None:
    """Write the diffusers folder (config.json + fp16 diffusion_pytorch_model.safetensors) atomically to dst."""

    def write(tmp: Path) -> None:
        model = build_vae_like(vae)
        model.load_state_dict(vae.state_dict())
        model.register_to_config(scaling_factor=scaling_factor)
        torch.nn.Module.half(model)  # plain cast; ModelMixin.to() warns about fp32-kept modules, and there are none
        model.save_pretrained(tmp, safe_serialization=True)

    replace_dir(write, dst)


def save_all(
    vae: AutoencoderKL,
    opt: torch.optim.Optimizer,
    cfg: VAETrainConfig,
    step: int,
    elapsed: float,
    run_dir: Path,
    out_dir: Path,
    n_eval: int,
) -> dict[str, Any]:
    """Checkpoint (for resume), then measure the latent scale and PSNR and export the usable diffusers folder."""
    atomic_torch_save(
        {
            "model": vae.state_dict(),
            "optim": opt.state_dict(),
            "step": step,
            "elapsed": elapsed,
            "config": cfg.to_dict(),
        },
        run_dir / CHECKPOINT,
    )
    vae.eval()
    t0 = time.time()
    train_x = heldout_scenes(cfg.seed, cfg.scale_scenes, cfg.eval_sizes[0])  # scenes 0.. of the training stream
    mean, std, detail = latent_stats(vae, train_x)
    scaling = latent_scale(detail)
    metrics = evaluate(vae, cfg, n_eval)
    export_vae(vae, out_dir / "vae", scaling)
    vae.train()
    report = {
        "step": step,
        "train_seconds": round(elapsed, 1),
        "latent_mean": mean,
        "latent_std": std,
        "latent_detail_rms": detail,
        "scaling_factor": scaling,
        "eval_scenes": n_eval,
        "eval_size": list(cfg.eval_sizes[0]),
        "eval_seed": cfg.eval_seed,
        **metrics,
        "params": sum(p.numel() for p in vae.parameters()),
        "export_mb": round(folder_mb(out_dir / "vae"), 3),
    }
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    sizes = ", ".join(f"{k[5:]} {v:.2f}" for k, v in metrics.items() if k != "psnr")
    logger.info(
        "step %d: saved; held-out PSNR %.2f dB (%d scenes; %s); latent std %.4f, detail RMS %.4f "
        "-> scaling_factor %.5f; export %.2f MB (%.0fs)",
        step, metrics["psnr"], n_eval, sizes, std, detail, scaling, report["export_mb"], time.time() - t0,
    )  # fmt: skip
    return report


# ---- training ---------------------------------------------------------------------------------------------------

RESUME_OVERRIDES = ("steps", "lr", "batch_pixels", "save_every_min")  # taken from the caller's cfg on resume
LOG_FIELDS = ("step", "seconds", "lr", "loss", "l1", "mse", "edge", "kl", "psnr_train", "psnr_heldout")


def train(
    cfg: VAETrainConfig,
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    stop_at: int | None = None,
    full_eval: bool = False,
) -> list[float]:
    """Train (or resume) a VAE run; checkpoint + export every `cfg.save_every_min` minutes and at the end.

    Args:
        cfg: the run's config (on resume the checkpoint's, except RESUME_OVERRIDES taken from `cfg`: changing them
            mid-run is allowed and logged, but then the run no longer replays an uninterrupted one).
        run_dir: checkpoint.pt, log.csv, loss.png, eval.json, train_config.json.
        out_dir: the diffusers folder goes to out_dir/vae.
        resume: continue from run_dir/checkpoint.pt; without it an existing checkpoint is an error.
        stop_at: stop (and save) after this step, as if interrupted; the schedule still follows cfg.steps.
        full_eval: evaluate on cfg.final_eval_scenes at the end even if cfg.steps is not reached (an early stop).
    Returns:
        The loss of every step run by this call.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT
    state = None
    if ckpt_path.is_file():
        if not resume:
            raise ValueError(f"{ckpt_path} exists: pass resume=True (--resume) or use another run dir")
        state = load_checkpoint(ckpt_path)
        saved = VAETrainConfig.from_dict(state["config"])
        changed = {
            k: (getattr(saved, k), getattr(cfg, k)) for k in RESUME_OVERRIDES if getattr(saved, k) != getattr(cfg, k)
        }
        if changed:
            logger.warning("resume: overriding the checkpoint's config with %s (old, new)", changed)
        cfg = dataclasses.replace(saved, **{k: getattr(cfg, k) for k in RESUME_OVERRIDES})
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg).train()
    init_weights(vae, cfg.init_logvar)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, elapsed = 0, 0.0
    if state is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        logger.info("resumed %s at step %d (%.0f s trained)", ckpt_path, step, elapsed)
    (run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    n_params = sum(p.numel() for p in vae.parameters())
    logger.info("VAE %.2fM params; training steps %d -> %d", n_params / 1e6, step, cfg.steps)
    log = CsvLog(run_dir / "log.csv", LOG_FIELDS, resume_step=step)
    last_save, losses, first_step, first_elapsed = time.time(), [], step, elapsed
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    try:
        while step < end:
            t0 = time.time()
            lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr_frac)
            for group in opt.param_groups:
                group["lr"] = lr
            x = training_batch(cfg, step)
            terms = vae_loss(vae, x, cfg, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            elapsed += time.time() - t0
            loss = float(terms["loss"].detach())
            if not math.isfinite(loss):
                raise FloatingPointError(f"VAE loss is {loss} at step {step}")
            losses.append(loss)
            if step % cfg.log_every == 0 or step == end:
                row = {k: float(v.detach()) for k, v in terms.items()}
                psnr_train = 10 * math.log10(4.0 / max(row["mse"], 1e-10))  # range [-1, 1] -> peak 2
                log.write({"step": step, "seconds": round(elapsed, 1), "lr": lr, **row, "psnr_train": psnr_train})
                speed = (elapsed - first_elapsed) / (step - first_step)
                logger.info("step %d/%d loss %.4f l1 %.4f psnr(train) %.2f lr %.2e %.2fs/step", step, cfg.steps,
                            loss, row["l1"], psnr_train, lr, speed)  # fmt: skip
            if step < end and time.time() - last_save > cfg.save_every_min * 60:
                report = save_all(vae, opt, cfg, step, elapsed, run_dir, out_dir, cfg.eval_scenes)
                log.write({"step": step, "seconds": round(elapsed, 1), "psnr_heldout": report["psnr"]})
                plot_curves(log.path, run_dir / "loss.png", ["loss", "l1", "mse"], title="demo VAE training loss")
                last_save = time.time()
        final = step >= cfg.steps or full_eval
        report = save_all(
            vae, opt, cfg, step, elapsed, run_dir, out_dir, cfg.final_eval_scenes if final else cfg.eval_scenes
        )
        log.write({"step": step, "seconds": round(elapsed, 1), "psnr_heldout": report["psnr"]})
        plot_curves(log.path, run_dir / "loss.png", ["loss", "l1", "mse"], title="demo VAE training loss")
    finally:
        log.close()
    return losses


# ---- command line -----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pixart.demo.vae",
        description="Train the demo AutoencoderKL on rendered emoji scenes; writes OUT/vae (diffusers folder).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = VAETrainConfig()
    p.add_argument("--out", required=True, metavar="DIR", help="export folder: the diffusers VAE goes to DIR/vae")
    p.add_argument("--run-dir", metavar="DIR", help="checkpoint, log.csv, loss.png, eval.json (default: OUT/vae_run)")
    p.add_argument("--steps", type=int, default=d.steps, help="total optimisation steps (also sets the LR schedule)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt if it exists")
    p.add_argument(
        "--stop-at", type=int, metavar="STEP", help="stop and save after STEP (the LR schedule keeps --steps)"
    )
    p.add_argument(
        "--full-eval", action="store_true", help="final PSNR on all held-out scenes even when stopping early"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the training scene stream and the init")
    p.add_argument("--lr", type=float, default=d.lr, help="peak AdamW learning rate")
    p.add_argument("--batch-pixels", type=int, default=d.batch_pixels, help="pixels per batch (batch = this / crop)")
    p.add_argument("--save-every-min", type=float, default=d.save_every_min, help="minutes between checkpoints")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the demo is sized for one)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log level")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = VAETrainConfig(
        steps=args.steps,
        seed=args.seed,
        lr=args.lr,
        batch_pixels=args.batch_pixels,
        save_every_min=args.save_every_min,
    )
    return run_trainer(
        args,
        "vae_run",
        lambda run_dir: train(
            cfg, run_dir, args.out, resume=args.resume, stop_at=args.stop_at, full_eval=args.full_eval
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
