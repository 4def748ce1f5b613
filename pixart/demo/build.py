"""Rebuild the bundled demo model from nothing: data -> tokenizer/T5 -> VAE -> caches -> DiT stages -> package.

    python -m pixart.demo.build                    # everything, resuming whatever a previous run finished
    python -m pixart.demo.build --stages base      # one stage (its inputs must exist)
    python -m pixart.demo.build --smoke --root /tmp/demo   # the whole recipe at toy scale (minutes)

Every stage is the project's own user-facing path: the emoji world is exported as an ordinary image folder
with captions, `pixart prepare`'s cache code encodes it, `pixart train` configs (configs/demo/*.toml) train
the transformer weak to strong (128 px -> 256 px with PE interpolation -> KV compression on the deeper half),
and the result is packaged as a diffusers-layout folder. Each stage skips work already done (the trainers
resume from their checkpoints), so the command can be killed and re-run at any time; a finished stage leaves
ROOT/<stage>.done and is skipped afterwards (except packaging, which is cheap and always redone). To lengthen a
finished DiT stage, raise `max_steps` in its config and delete its .done file: it trains on from its last
checkpoint. `--set STAGE.KEY=VALUE` overrides a DiT stage's config for this run (e.g. a bigger batch on a GPU).
Wall times are appended to ROOT/build-times.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent.parent
PACKAGE_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"
STAGES = ("data", "text_encoder", "vae", "cache-128", "base", "cache-256", "hires", "kv", "package")

# (width, height) of the exported scenes: the exact bucket sizes of each stage's table, so no crop cuts an emoji.
SIZES_128 = ((128, 128), (160, 96), (96, 160), (144, 112), (112, 144))
SIZES_256 = ((256, 256), (320, 192), (192, 320), (288, 224), (224, 288))
SCENES = {"data-128": 12000, "data-256": 4000}
SMOKE_SCENES = {"data-128": 24, "data-256": 12}


def _timed(root: Path, stage: str, fn, *args) -> None:
    """Run a stage unless ROOT/STAGE.done says it finished; record its wall time. Packaging (seconds) always
    runs, so `--package-from` can replace an interim package."""
    done = root / f"{stage}.done"
    if done.exists() and stage != "package":
        logger.info("stage %s: done earlier (%s), skipping; delete that file to redo it", stage, done)
        return
    start = time.time()
    fn(*args)
    entry = {"stage": stage, "seconds": round(time.time() - start, 1), "finished": time.strftime("%Y-%m-%d %H:%M")}
    with (root / "build-times.jsonl").open("a") as f:
        f.write(json.dumps(entry) + "\n")
    done.write_text(json.dumps(entry) + "\n")
    logger.info("stage %s took %.0f s", stage, entry["seconds"])


# ---- stages ---------------------------------------------------------------------------------------------------------


def stage_data(root: Path, smoke: bool) -> None:
    from pixart.data.emoji import export_dataset

    counts = SMOKE_SCENES if smoke else SCENES
    export_dataset(root / "data-128", counts["data-128"], seed=0, sizes=SIZES_128)
    export_dataset(root / "data-256", counts["data-256"], seed=1, sizes=SIZES_256)


def stage_text_encoder(root: Path, smoke: bool) -> None:
    from pixart.demo import text_encoder

    args = ["--out", str(root / "export"), "--run-dir", str(root / "text_encoder"), "--resume"]
    if smoke:
        args += ["--steps", "2", "--corpus-scenes", "200", "--vocab-size", "300"]
    if text_encoder.main(args) != 0:
        raise RuntimeError("text encoder training failed; see its log")


def stage_vae(root: Path, smoke: bool) -> None:
    from pixart.demo import vae

    args = ["--out", str(root / "export"), "--run-dir", str(root / "vae"), "--resume"]
    if smoke:
        args += ["--steps", "2", "--batch-pixels", "16384"]
    if vae.main(args) != 0:
        raise RuntimeError("VAE training failed; see its log")


def stage_cache(
    root: Path, smoke: bool, res: int, *, device: str = "cpu", batch_size: int = 16, workers: int = 2
) -> None:
    """`pixart prepare`'s cache of data-RES (T5 features, VAE latent mean/std); each DiT stage needs only its own.

    device / batch_size / workers: where the encoders run, images per encoder call, image-decoding threads.
    """
    from pixart.data.buckets import bins_for
    from pixart.data.cache import T5AndVAE, prepare_cache

    export = root / "export"
    encoders = T5AndVAE(export, export / "vae", max_tokens=120, device=device)  # export/: text_encoder/ + tokenizer/
    summary = prepare_cache(
        root / f"data-{res}",
        root / f"cache-{res}",
        encoders,
        bins=bins_for(res),
        max_tokens=120,
        shard_size=64 if smoke else 1024,
        batch_size=batch_size,
        workers=workers,
    )
    logger.info("cache-%d on %s: %s", res, device, summary)


def _train_overrides(root: Path, stage: str, smoke: bool) -> list[str]:
    out = [
        f"output_dir={root / f'dit-{stage}'}",
        f"data.cache={root / ('cache-128' if stage == 'base' else 'cache-256')}",
        f"data.text_encoder={root / 'export'}",
        f"data.vae={root / 'export' / 'vae'}",
    ]
    previous = {"hires": "base", "kv": "hires"}.get(stage)
    if previous:
        out.append(f"model.init_from={root / f'dit-{previous}' / 'final.safetensors'}")
    if smoke:
        out += [
            "max_steps=2",
            "batch_size=4",
            "checkpoint_every=1",
            "validation.every=0",
            "validation.steps=2",
            "validation.seeds=[0]",
            'validation.prompts=["a red apple on a blue background"]',
        ]
    return out


def stage_train(root: Path, stage: str, smoke: bool, extra: Sequence[str] = ()) -> None:
    """Train one DiT stage with `pixart train`'s loop, then export its final weights (EMA when kept) and plot its
    log.csv as loss.png.

    `extra`: more `KEY=VALUE` overrides of the stage's config (after the build's own), e.g. `batch_size=256`.
    """
    from pixart.train.config import load_train_config
    from pixart.train.loop import main as train

    overrides = [*_train_overrides(root, stage, smoke), *extra]
    cfg = load_train_config(REPO / "configs" / "demo" / f"{stage}.toml", overrides)
    final = Path(cfg.output_dir) / "final.safetensors"
    step = _latest_step(Path(cfg.output_dir))
    if final.exists() and (step is None or step >= cfg.max_steps):
        logger.info("stage %s: %s exists, skipping", stage, final)
        return
    if final.exists():  # max_steps was raised after the stage ended: train on from its last checkpoint
        logger.info("stage %s: %s is from step %d; training on to max_steps = %d", stage, final, step, cfg.max_steps)
    train(cfg)
    export_latest(Path(cfg.output_dir), final)
    plot_losses(Path(cfg.output_dir), stage)


def plot_losses(run_dir: Path, stage: str) -> Path | None:
    """RUN/loss.png: the loss and its MSE and VLB parts from RUN/log.csv, against the step (None: no log)."""
    from pixart.demo._common import plot_curves

    png = run_dir / "loss.png"
    if not (run_dir / "log.csv").exists():
        logger.warning("stage %s: no %s to plot", stage, run_dir / "log.csv")
        return None
    plot_curves(run_dir / "log.csv", png, ["loss", "mse", "vb"], title=f"demo DiT, stage {stage}: training loss")
    return png


def _latest_step(run_dir: Path) -> int | None:
    """The step of a run's newest complete checkpoint (None when it has none)."""
    from pixart.train.state import latest_checkpoint

    path = latest_checkpoint(run_dir / "checkpoints")
    return None if path is None else json.loads((path / "trainer.json").read_text())["step"]


def export_latest(run_dir: Path, dst: Path) -> int:
    """Write the newest checkpoint of a DiT run (its EMA weights when kept) as a transformer file; returns its step.

    Used for each stage's final.safetensors and, mid-run, for evaluating a snapshot (`--export-latest STAGE`).
    """
    import torch

    from pixart.checkpoint import build_model, save_transformer
    from pixart.config import ModelConfig
    from pixart.train.state import latest_checkpoint, load_checkpoint

    path = latest_checkpoint(run_dir / "checkpoints")
    if path is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} holds no checkpoint yet")
    ckpt = load_checkpoint(path)
    weights = ckpt["ema"] if ckpt["ema"] is not None else ckpt["model"]
    model_cfg = ModelConfig.from_json(_config_json(run_dir))
    save_transformer(build_model(model_cfg, {k: v.to(torch.float32) for k, v in weights.items()}), dst)
    return ckpt["state"].step


def _config_json(run_dir: Path) -> str:
    """The model config stored in the newest checkpoint of a run."""
    from safetensors import safe_open

    from pixart.train.state import latest_checkpoint

    with safe_open(str(latest_checkpoint(run_dir / "checkpoints") / "transformer.safetensors"), "pt") as f:
        return f.metadata()["pixart_config"]


def stage_package(root: Path, smoke: bool, dst: Path = PACKAGE_DIR, source: str = "kv") -> None:
    """Write a diffusers-layout folder: model_index.json, transformer/ (fp16), text_encoder/, tokenizer/, vae/,
    scheduler/. `source` picks the DiT stage whose final weights ship (kv: the finished recipe)."""
    import torch

    from pixart.checkpoint import load_transformer, write_checkpoint
    from pixart.config import SCHEDULER_PREDICTION

    final = root / f"dit-{source}" / "final.safetensors"
    note = STAGE_NOTE[source]
    if not final.exists():  # a run in progress: ship the snapshot `--export-latest` wrote, and say so
        latest = final.with_name("latest.safetensors")
        if not latest.exists():
            raise FileNotFoundError(f"{final} does not exist (stage {source} has not finished); "
                                    f"`--export-latest {source}` writes a snapshot of a run in progress")  # fmt: skip
        step = json.loads(latest.with_suffix(".json").read_text())["step"]
        final, note = latest, note + SNAPSHOT_NOTE.format(step=step)
        logger.warning("stage %s has not finished: packaging its step-%d snapshot %s", source, step, latest)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = load_transformer(final, dtype=torch.float16)
    write_checkpoint(model, tmp / "transformer", "diffusers")
    for part in ("text_encoder", "tokenizer", "vae"):
        shutil.copytree(root / "export" / part, tmp / part)
    scheduler = {
        "_class_name": "DPMSolverMultistepScheduler",
        "algorithm_type": "dpmsolver++",
        "solver_order": 2,
        "solver_type": "midpoint",
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "num_train_timesteps": 1000,
        "prediction_type": SCHEDULER_PREDICTION[model.cfg.prediction],
        "timestep_spacing": "linspace",
        "lower_order_final": True,
    }
    (tmp / "scheduler").mkdir()
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    index = {
        "_class_name": "PixArtSigmaPipeline",
        "transformer": ["diffusers", "PixArtTransformer2DModel"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    (tmp / "README.md").write_text(MODEL_CARD + note)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    logger.info("packaged the demo model in %s", dst)


MODEL_CARD = """# pixart-sigma demo model

A small PixArt-Σ (transformer, T5 encoder, VAE) trained from scratch by `python -m pixart.demo.build` on
"emoji world" scenes: 1-3 emoji at described positions and sizes on a coloured background.

The emoji artwork is OpenMoji (https://openmoji.org), licensed CC BY-SA 4.0; the training images are
derived from it, and so are these weights: share them under the same licence, with this credit.

How long each stage trained, what the model can and cannot draw yet, and its prompt-adherence scores
(`pixart eval`) are in the project README, section "The bundled demo model".
"""
STAGE_NOTE = {
    "kv": "\nThe transformer is the final stage: 256 px, KV compression (conv, 2x) on blocks 4-7.\n",
    "hires": "\nThe transformer is stage 2 of 3 (256 px, no KV compression): the recipe has not finished yet.\n",
    "base": "\nThe transformer is stage 1 of 3 (128 px base): the 256 px and KV stages have not been run yet.\n",
}
SNAPSHOT_NOTE = "This is a snapshot of that stage's run at step {step}, before its last step.\n"


# ---- command line ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pixart.demo.build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", default=str(REPO / "runs" / "demo"), help="working folder (data, caches, runs)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}")
    p.add_argument("--smoke", action="store_true", help="toy sizes everywhere: checks the recipe in minutes")
    p.add_argument("--package-dir", default=str(PACKAGE_DIR), help="where the packaged model folder goes")
    p.add_argument(
        "--export-latest",
        metavar="STAGE",
        choices=("base", "hires", "kv"),
        help="instead of building: write ROOT/dit-STAGE/latest.safetensors from that run's newest checkpoint "
        "(EMA weights), e.g. to `pixart eval` a run in progress",
    )
    p.add_argument(
        "--package-from",
        default="kv",
        choices=("base", "hires", "kv"),
        help="the DiT stage whose final.safetensors the package stage ships (kv: the finished recipe); for a "
        "stage still running, the snapshot --export-latest wrote (the model card gives its step)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help="override a DiT stage's config (base, hires or kv), as `pixart train --set`; repeatable, e.g. "
        "--set base.batch_size=256 --set base.max_steps=4000",
    )
    return p


def split_overrides(items: Sequence[str]) -> dict[str, list[str]]:
    """{"base": ["batch_size=256"], ...} from ["base.batch_size=256", ...]; ValueError names a bad item."""
    out: dict[str, list[str]] = {"base": [], "hires": [], "kv": []}
    for item in items:
        stage, dot, rest = item.partition(".")
        if stage not in out or not dot or "=" not in rest:
            raise ValueError(f"--set {item!r}: expected STAGE.KEY=VALUE with STAGE one of base, hires, kv")
        out[stage].append(rest)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stages {unknown}; allowed: {', '.join(STAGES)}")
    try:
        extra = split_overrides(args.overrides)
    except ValueError as e:
        parser.error(str(e))
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    if args.export_latest:
        dst = root / f"dit-{args.export_latest}" / "latest.safetensors"
        step = export_latest(root / f"dit-{args.export_latest}", dst)
        dst.with_suffix(".json").write_text(json.dumps({"step": step}) + "\n")
        logger.info("wrote %s (step %d)", dst, step)
        return 0
    steps = {
        "data": lambda: stage_data(root, args.smoke),
        "text_encoder": lambda: stage_text_encoder(root, args.smoke),
        "vae": lambda: stage_vae(root, args.smoke),
        "cache-128": lambda: stage_cache(root, args.smoke, 128),
        "cache-256": lambda: stage_cache(root, args.smoke, 256),
        "base": lambda: stage_train(root, "base", args.smoke, extra["base"]),
        "hires": lambda: stage_train(root, "hires", args.smoke, extra["hires"]),
        "kv": lambda: stage_train(root, "kv", args.smoke, extra["kv"]),
        "package": lambda: stage_package(root, args.smoke, Path(args.package_dir), args.package_from),
    }
    for stage in STAGES:
        if stage in stages:
            _timed(root, stage, steps[stage])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
