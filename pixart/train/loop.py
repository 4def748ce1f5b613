"""The training loop: `main(cfg)` and its named helpers (DiT's train.py shape, with accelerate for devices).

One optimizer step consumes one global batch from `BucketBatchSampler` (all processes, all accumulation steps):
each process takes its contiguous shard, splits it into `grad_accum` micro-batches, and accelerate averages
gradients over processes, so N processes compute exactly the step one process would with the same global
batch. Noise, timesteps and caption dropout come from a generator seeded by (seed, step) and drawn for the
whole global batch before sharding, for the same reason; with the sampler's saved position this makes a
resumed run repeat the loss sequence of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import time
from pathlib import Path

import torch
from torch import Tensor
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from pixart.data.sampler import STREAM_NOISE, BucketBatchSampler, sample_generator
from pixart.diffusion.losses import GaussianDiffusion, foreground_weights
from pixart.model.attention import trim_caption_padding
from pixart.train.batches import StepBatches, step_batches
from pixart.train.config import TrainConfig
from pixart.train.optim import (
    build_optimizer,
    effective_lr,
    ema_state_dict,
    init_ema,
    lr_at,
    set_lr,
    update_ema,
)
from pixart.train.state import TrainerState, latest_checkpoint, load_checkpoint, remove_partial, save_checkpoint
from pixart.train.validation import Validator

logger = logging.getLogger(__name__)

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)  # unsharded, on the CPU, for any wrapping
STREAM_STEP = 16  # random stream of per-step draws; sample streams (pixart.data.sampler) use small numbers


# ---- building blocks ----------------------------------------------------------------------------------------------


def build_model(cfg: TrainConfig):
    """The transformer to train: a preset (+ overrides) from scratch, or `init_from` a checkpoint, then the
    weak-to-strong changes the config asks for (new native resolution / PE scale, KV compression on)."""
    from pixart.config import ModelConfig, get_preset
    from pixart.model import PixArtSigma

    m = cfg.model
    if m.init_from:
        from pixart.checkpoint import load_transformer

        model = load_transformer(m.init_from, preset=m.preset or None)
        # Overrides that cannot change a weight's shape; a new `prediction` retargets the model (fine-tuning ε -> v).
        shape_free = {"class_dropout_prob", "prediction"}
        bad = sorted(set(m.config) - shape_free)
        if bad:
            raise ValueError(
                f"model.config keys {bad} cannot change a model loaded with init_from; allowed: {sorted(shape_free)}"
            )
        model.cfg = model.cfg.replace(**m.config)
    else:
        model_cfg = ModelConfig.from_dict({**get_preset(m.preset).to_dict(), **m.config})
        model = PixArtSigma(model_cfg)
    if m.sample_size or m.pe_interpolation:  # stage (b): resolution up; only the PE depends on these
        model.cfg = model.cfg.replace(
            sample_size=m.sample_size or model.cfg.sample_size,
            pe_interpolation=m.pe_interpolation or model.cfg.pe_interpolation,
        )
    if m.kv_compress_layers:  # stage (c): KV compression on, average-initialised
        model.enable_kv_compression(m.kv_compress_layers, m.kv_compress_factor, m.kv_compress_sampling)
    model.set_gradient_checkpointing(m.gradient_checkpointing)
    if cfg.lora.rank:
        from pixart.train.lora import DEFAULT_TARGETS, add_lora

        add_lora(model, cfg.lora.rank, cfg.lora.alpha or None, cfg.lora.targets or DEFAULT_TARGETS)
    return model


def build_dataset(cfg: TrainConfig, model_cfg):
    """(dataset, collate) for the cache or the raw data, bucketed by the configured bin table."""
    from pixart.data import buckets

    bins = (
        buckets.bins_for(cfg.data.resolution)
        if cfg.data.multi_scale
        else buckets.fixed_bins(cfg.data.resolution, cfg.data.resolution)
    )
    if cfg.data.cache:
        from pixart.data.cache_read import CachedDataset, collate_cached

        def read(cache: str) -> CachedDataset:
            return CachedDataset(
                cache, long_caption_ratio=cfg.data.long_caption_ratio, seed=cfg.seed, max_tokens=cfg.data.max_tokens
            )

        if not cfg.data.mix:
            return read(cfg.data.cache), collate_cached
        from pixart.data.cache_read import MixedCachedDataset

        repeats = cfg.data.mix_repeats or [1] * len(cfg.data.mix)
        parts = [(read(cfg.data.cache), 1)] + [(read(c), r) for c, r in zip(cfg.data.mix, repeats, strict=True)]
        return MixedCachedDataset(parts), collate_cached
    from pixart.data.dataset import ImageCaptionDataset, collate

    return ImageCaptionDataset(
        cfg.data.path, bins, long_caption_ratio=cfg.data.long_caption_ratio, seed=cfg.seed
    ), collate


class Encoders:
    """Frozen T5 and VAE for raw-image training; not needed with a feature cache."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        from pixart.text import TextEncoder
        from pixart.vae import VAE

        if not (cfg.data.text_encoder and cfg.data.vae):
            raise ValueError(
                "training on raw images needs data.text_encoder and data.vae folders "
                "(or prepare a feature cache with `pixart prepare` and set data.cache)"
            )
        self.text = TextEncoder.from_folder(cfg.data.text_encoder, max_length=cfg.data.max_tokens, device=device)
        self.vae = VAE.from_folder(cfg.data.vae, device=device)

    @torch.no_grad()
    def latents(self, pixels: Tensor, generators: list[torch.Generator]) -> Tensor:
        """Scaled latents sampled from the VAE posterior, (B, C, H/8, W/8)."""
        posterior = self.vae.model.encode(pixels.to(self.vae.device, self.vae.dtype)).latent_dist
        noise = torch.stack([torch.randn(posterior.mean.shape[1:], generator=g) for g in generators])
        return (posterior.mean + posterior.std * noise.to(posterior.mean)).float() * self.vae.scaling_factor

    @torch.no_grad()
    def captions(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        return self.text.encode(texts)


def null_caption(cfg: TrainConfig, max_tokens: int) -> Tensor | None:
    """T5("") padded to `max_tokens`: what a dropped caption becomes, and what CFG's unconditional branch gets
    at inference (the pipeline encodes the empty prompt). The reference puts it into `y_embedding` whenever it
    loads a model to train; a from-scratch model would otherwise train on its random initial null caption and
    meet T5("") only at inference. From the cache when it stores one, else from data.text_encoder; None if
    neither can say.
    """
    if cfg.data.cache:
        from pixart.data.cache_read import read_null_caption

        stored = read_null_caption(cfg.data.cache)
        if stored is not None and stored.shape[0] >= max_tokens:
            return stored[:max_tokens]
    if cfg.data.text_encoder:
        from pixart.text import TextEncoder

        text = TextEncoder.from_folder(cfg.data.text_encoder, max_length=max_tokens)
        return text.encode([""])[0][0].float()  # (L, D)
    return None


def set_null_caption(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Put T5("") into the model's null caption (`y_embedder.y_embedding`), or warn that it cannot."""
    buffer = next(b for name, b in model.named_buffers() if name.endswith("y_embedder.y_embedding"))
    null = null_caption(cfg, buffer.shape[0])
    if null is None:
        logger.warning(
            "neither the cache nor data.text_encoder gives T5(''): dropped captions use the model's stored null "
            "caption, which CFG at inference does not (it encodes the empty prompt)"
        )
        return
    if null.shape != buffer.shape:
        raise ValueError(f"T5('') has shape {tuple(null.shape)}, the model's null caption {tuple(buffer.shape)}")
    if not torch.equal(buffer, null.to(buffer)):
        logger.info("null caption for caption dropout: T5('') (%d tokens)", buffer.shape[0])
    with torch.no_grad():
        buffer.copy_(null)


def model_inputs(batch: dict, encoders: Encoders | None, seed: int, epoch: int, device) -> tuple:
    """(x0 latents, caption features, caption mask) of a local batch, on `device`, the caption columns that every
    row pads cut off (`trim_caption_padding`: they cost work and change nothing).

    The VAE posterior sample of each image is drawn from its own (seed, epoch, index) stream, as the cache's
    latents are, so it does not depend on how the batch is split over processes.
    """
    if "latent" in batch:  # cache: latents already sampled from the stored mean/std and scaled
        caption, mask = trim_caption_padding(batch["caption"], batch["caption_mask"])  # on the host: no GPU sync
        return batch["latent"].to(device), caption.to(device), mask.to(device)
    generators = [sample_generator(seed, epoch, int(i), STREAM_NOISE) for i in batch["index"]]
    x0 = encoders.latents(batch["pixels"].to(device), generators)
    caption, mask = trim_caption_padding(*encoders.captions(batch["caption"]))
    return x0, caption.to(device), mask.to(device)


def step_randomness(cfg: TrainConfig, step: int, latent_shape: tuple, num_timesteps: int, dropout: float):
    """Noise, timesteps and caption-dropout flags of one optimizer step, drawn for the whole global batch."""
    gen = sample_generator(cfg.seed, step, 0, STREAM_STEP)
    if cfg.timestep_sampling == "logit_normal":  # SD3's density (diffusers' helper), mapped onto the T steps
        from diffusers.training_utils import compute_density_for_timestep_sampling

        u = compute_density_for_timestep_sampling(
            "logit_normal", cfg.batch_size, cfg.timestep_logit_mean, cfg.timestep_logit_std, generator=gen
        )  # (B,) in (0, 1)
        t = (u * num_timesteps).long().clamp(max=num_timesteps - 1)
    else:
        t = torch.randint(0, num_timesteps, (cfg.batch_size,), generator=gen)
    if cfg.timestep_high_fraction > 0:  # its own stream: noise and dropout stay those of the run without it
        high_gen = sample_generator(cfg.seed, step, 1, STREAM_STEP)
        high = torch.rand(cfg.batch_size, generator=high_gen) < cfg.timestep_high_fraction  # (B,)
        low_end = min(cfg.timestep_high_from, num_timesteps - 1)
        t = torch.where(high, torch.randint(low_end, num_timesteps, (cfg.batch_size,), generator=high_gen), t)
    drop = torch.rand(cfg.batch_size, generator=gen) < dropout
    noise = torch.randn((cfg.batch_size, *latent_shape), generator=gen)
    return noise, t, drop


# ---- logging -----------------------------------------------------------------------------------------------------


class CsvLog:
    """Appends one row per logged step; also to TensorBoard when it is installed."""

    FIELDS = ["step", "loss", "mse", "vb", "lr", "grad_norm", "images_per_s", "epoch", "time"]

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled, self.tb = path, enabled, None
        if not enabled:
            return
        new = not path.exists()
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)
        if new:
            self.writer.writeheader()
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.writer.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "time"):
                    self.tb.add_scalar(k, v, row["step"])

    def truncate_after(self, step: int) -> None:
        """Drop rows past `step` (written after the checkpoint a resumed run restarts from)."""
        if not self.enabled or not self.path.exists():
            return
        self.file.close()
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS)
            w.writeheader()
            w.writerows(rows)
        self.file = self.path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)


# ---- the loop ------------------------------------------------------------------------------------------------------


def _accelerator(mixed_precision: str, *, cpu: bool):
    """A new `Accelerator` for this run. accelerate keeps one state per process and refuses a second Accelerator
    with another mixed precision; a process that trains several runs one after another (the demo build's stages,
    some in bf16) drops the finished run's precision state first. The distributed setup (accelerate's
    PartialState: process group, device) is kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    previous = AcceleratorState._shared_state.get("_mixed_precision")  # accelerate's own record of it
    if previous is not None and previous != mixed_precision:
        logger.info("mixed precision %s -> %s: starting a new accelerator state", previous, mixed_precision)
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def main(cfg: TrainConfig, *, stop_after: int | None = None) -> list[float]:
    """Train until `cfg.max_steps` (or `stop_after` more steps, for tests); returns the losses of the steps run."""
    cfg.validate()
    # On a machine without an accelerator, say so: accelerate then runs torchrun'd processes with gloo.
    no_gpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    accelerator = _accelerator(cfg.mixed_precision, cpu=no_gpu)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    if accelerator.is_main_process:
        logger.info("accelerate: %s on %s, %d process(es)", accelerator.distributed_type.value, device, world)
        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and accelerator.distributed_type != "FSDP":
            logger.warning("FSDP was requested, but accelerate runs FSDP only on GPUs/XPUs/NPUs: training with %s",
                           accelerator.distributed_type.value)  # fmt: skip
    out = Path(cfg.output_dir)
    ckpt_root = out / "checkpoints"
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        remove_partial(ckpt_root)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(
            f"batch_size={cfg.batch_size} must be divisible by processes x grad_accum = {world} x {cfg.grad_accum}"
        )

    torch.manual_seed(cfg.seed)  # the initial weights of a model trained from scratch
    model = build_model(cfg)
    dataset, collate = build_dataset(cfg, model.cfg)
    logger.info("data: %s", dataset.summary())
    sampler = BucketBatchSampler(dataset.bucket_keys(), cfg.batch_size, seed=cfg.seed)
    peak_lr = effective_lr(cfg.optim, cfg.batch_size)
    ema = init_ema(model) if cfg.ema_decay > 0 else None
    diffusion = GaussianDiffusion.linear(1000)
    step, ckpt = 0, None

    resume_from = latest_checkpoint(ckpt_root)
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        model.load_state_dict(ckpt["model"])  # a full state dict, before any wrapping (DDP, FSDP)
        if ema is not None and ckpt["ema"] is not None:
            ema = {k: ckpt["ema"][k].float() for k in ema}
        sampler.load_state_dict(ckpt["state"].sampler)
        step = ckpt["state"].step
        logger.info("resumed from %s at step %d", resume_from, step)
    set_null_caption(model, cfg)  # after a resume too: a run started before this was done gets it now

    encoders = None if cfg.data.cache else Encoders(cfg, device)
    # Model and optimizer go through prepare together: under FSDP accelerate swaps the parameters for sharded
    # ones and points the optimizer at those.
    train_model, optimizer = accelerator.prepare(
        torch.compile(model) if cfg.compile else model, build_optimizer(model, cfg.optim, peak_lr)
    )
    if accelerator.distributed_type == "FSDP" and accelerator.is_main_process:
        params = list(train_model.parameters())
        held = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params)
        total = sum(p.numel() for p in params)
        logger.info("FSDP: this process holds %.1f%% of the %d parameter values", 100 * held / total, total)
    if ema is not None:  # built (or loaded) before prepare moved the model: keep it beside the weights
        ema = {k: v.to(device) for k, v in ema.items()}
    if ckpt is not None:
        set_optimizer_state_dict(train_model, optimizer.optimizer, ckpt["optimizer"], options=FULL_STATE)
    train_model.train()
    log = CsvLog(out / "log.csv", accelerator.is_main_process)
    log.truncate_after(step)
    validator = Validator.maybe(cfg, device) if accelerator.is_main_process else None
    if step == 0:  # "before" images: what the starting weights make of the validation prompts
        validate(accelerator, validator, train_model, step)

    losses: list[float] = []
    pending: list[Tensor] = []  # (3,) loss, mse, vb of the steps since the last log, still on the device
    last_time, images_since = time.perf_counter(), 0
    end = cfg.max_steps if stop_after is None else min(cfg.max_steps, step + stop_after)
    local_size = cfg.batch_size // world
    batches = StepBatches(dataset, sampler, collate, end - step, rank, world)
    o = cfg.optim  # each step's lr is a function of the step alone, so a resumed run follows the same schedule
    schedule = dict(decay=o.decay, decay_steps=o.decay_steps, max_steps=cfg.max_steps, min_lr_ratio=o.min_lr_ratio)
    for batch, epoch, position in step_batches(batches, cfg.data.num_workers):
        step += 1
        set_lr(optimizer, lr_at(step, peak_lr, cfg.optim.warmup_steps, **schedule))
        x0, caption, mask = model_inputs(batch, encoders, cfg.seed, epoch, device)
        noise_all, t_all, drop_all = step_randomness(
            cfg, step, tuple(x0.shape[1:]), diffusion.num_timesteps, model.cfg.class_dropout_prob
        )
        lo = rank * local_size
        noise, t, drop = (v[lo : lo + local_size].to(device) for v in (noise_all, t_all, drop_all))

        step_loss = torch.zeros(3, device=device)  # loss, mse, vb; read on the host only when logging
        micro = local_size // cfg.grad_accum
        for k in range(cfg.grad_accum):
            sl = slice(k * micro, (k + 1) * micro)
            sync = k == cfg.grad_accum - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(train_model):
                xt = diffusion.q_sample(x0[sl], t[sl], noise[sl])
                out_ = train_model(xt, t[sl], caption[sl], mask[sl], drop_caption=drop[sl])
                terms = diffusion.training_losses(
                    out_.float(),
                    x0[sl],
                    xt,
                    noise[sl],
                    t[sl],
                    snr_gamma=cfg.snr_gamma,
                    prediction=model.cfg.prediction,
                    weights=(
                        foreground_weights(x0[sl], cfg.foreground_weight, cfg.foreground_threshold)
                        if cfg.foreground_weight > 0
                        else None
                    ),
                )
                loss = terms["loss"].mean() / cfg.grad_accum
                accelerator.backward(loss)
            step_loss += torch.stack([terms[n].detach().mean() for n in ("loss", "mse", "vb")]) / cfg.grad_accum
        grad_norm = accelerator.clip_grad_norm_(train_model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sampler.epoch, sampler.batches_done = epoch, position + 1  # what a checkpoint resumes after
        if ema is not None:
            update_ema(ema, accelerator.unwrap_model(train_model), cfg.ema_decay)

        pending.append(accelerator.reduce(step_loss, reduction="mean"))
        images_since += cfg.batch_size
        if step % cfg.log_every == 0 or step == end:
            # The only host sync of the interval: per-step reads would make the host wait for the GPU every
            # step instead of queuing the next step's work while this one runs.
            values = torch.stack(pending).tolist()
            losses.extend(v[0] for v in values)
            pending.clear()
            now = time.perf_counter()
            log.write(
                {
                    "step": step,
                    "loss": f"{values[-1][0]:.6f}",
                    "mse": f"{values[-1][1]:.6f}",
                    "vb": f"{values[-1][2]:.6f}",
                    "lr": f"{optimizer.param_groups[0]['lr']:.3e}",
                    "grad_norm": f"{float(grad_norm):.4f}",
                    "images_per_s": f"{images_since / (now - last_time):.2f}",
                    "epoch": epoch,
                    "time": f"{now:.1f}",
                }
            )
            if accelerator.is_main_process:
                shown = (step, *values[-1], optimizer.param_groups[0]["lr"], float(grad_norm))
                logger.info("step %d loss %.4f (mse %.4f vb %.4f) lr %.2e grad %.3f", *shown)
            last_time, images_since = now, 0
        if step % cfg.checkpoint_every == 0 or step == end:
            save(accelerator, cfg, train_model, optimizer, ema, sampler, step, ckpt_root)
        every = cfg.validation.every
        if (every and step % every == 0) or step == cfg.max_steps:
            validate(accelerator, validator, train_model, step)
    accelerator.wait_for_everyone()
    return losses


def validate(accelerator, validator: Validator | None, train_model, step: int) -> None:
    """Validation images from the main process; the others wait.

    Under FSDP a sharded model's forward is a collective, so the main process cannot run it alone: every process
    helps gather the full weights, and the main process generates with an unsharded copy.
    """
    model = accelerator.unwrap_model(train_model)
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    if accelerator.distributed_type == "FSDP":
        state = full_state_dict(accelerator, train_model)
        if validator is not None:
            model = unsharded_copy(model, state)
    if validator is not None:
        validator(model, step)
    accelerator.wait_for_everyone()


def full_state_dict(accelerator, train_model) -> dict[str, Tensor]:
    """The model's whole state dict on the CPU, keyed as the bare model's (a collective under FSDP)."""
    return {k.removeprefix("_orig_mod."): v for k, v in accelerator.get_state_dict(train_model).items()}


def unsharded_copy(model, state: dict[str, Tensor]):
    """A plain (unwrapped, unsharded) model with `model`'s config, LoRA adapters and the weights in `state`."""
    from pixart.model import PixArtSigma

    copy = PixArtSigma(model.cfg)
    meta = getattr(model, "_lora_meta", None)
    if meta is not None:
        from pixart.train.lora import add_lora

        add_lora(copy, meta["rank"], meta["alpha"], meta["targets"])
    copy.load_state_dict(state)
    return copy.to(accelerator_device(model)).eval()


def accelerator_device(model) -> torch.device:
    """The device a (possibly sharded) model computes on."""
    p = next(model.parameters())
    return p.to_local().device if hasattr(p, "to_local") else p.device  # a DTensor shard lives on its device


def save(accelerator, cfg: TrainConfig, train_model, optimizer, ema, sampler, step: int, root: Path) -> None:
    """Gather full state dicts on every process (a collective under FSDP); the main process writes them."""
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(train_model)
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    state = full_state_dict(accelerator, train_model)
    optimizer_state = get_optimizer_state_dict(train_model, optimizer.optimizer, options=FULL_STATE)
    if accelerator.is_main_process:
        lora = None
        if cfg.lora.rank:
            from pixart.train.lora import lora_state_dict

            lora = (lora_state_dict(state), model._lora_meta)
        save_checkpoint(
            root,
            TrainerState(step, sampler.state_dict()),
            state,
            model.cfg.to_json(),
            optimizer_state,
            cfg.to_dict(),
            ema_state=ema_state_dict(ema, state) if ema is not None else None,
            lora=lora,
            keep=cfg.keep_checkpoints,
        )
    accelerator.wait_for_everyone()
