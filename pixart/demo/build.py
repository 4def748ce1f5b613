"""Rebuild the bundled demo model from nothing: data -> tokenizer/T5 -> VAE -> caches -> DiT stages -> package.

    python -m pixart.demo.build                    # everything, resuming whatever a previous run finished
    python -m pixart.demo.build --stages base      # one stage (its inputs must exist)
    python -m pixart.demo.build --smoke --root /tmp/demo   # the whole recipe at toy scale (minutes)

Every stage is the project's own user-facing path: the emoji world is exported as an ordinary image folder
with captions, `pixart prepare`'s cache code encodes it, `pixart train` configs (configs/demo/*.toml) train
the transformer weak to strong (128 px -> 256 px with PE interpolation -> KV compression on the deeper half),
and the result is packaged as a diffusers-layout folder. At 128 px the base stage is followed by a layout lesson
(one emoji a scene, every step at high noise: `configs/demo/lesson.toml`) and a return to the full world
(`configs/demo/full.toml`), which is how the model learns to put each object where its caption says. The retext
stages then fine-tune the kv stage's model to read a second T5 (`text_encoder-v2`: word identity and context
invariance, the same tokenizer; `configs/demo/retext-*.toml`), first on one large emoji in the middle of the
picture (`data-centre`: the identity lesson), then the one-object and full worlds, then all three at once
(`retext-mix`, `data.mix`), then 256 px (`retext-kv`). The layout stages do it once more for a fourth T5
(`text_encoder-v4`: the second fine-tuned so that each emoji name says where its object is and how large, and able
to tell word order), from retext-mix's model: the three worlds mixed (`layout-mix`), then 256 px (`layout-kv`).
The draw stages go on from retext-centre: the identity lesson longer (`draw-centre`), one emoji a scene anywhere
mixed with the centred world (`draw-singles`), then 256 px (`draw-kv`); `bind-mix` brings the full world back,
read through a fifth T5 (`text_encoder-v5`). The pair stages add a world of exactly two emoji a scene
(`data-pair`) to the one-object and centred ones (`pair-mix`), then 256 px (`pair-kv`; `draw-hires`: the same
worlds at 256 px with the centred one in every batch). `draw-snap` goes on from draw-hires on the one- and
two-object worlds redrawn with each emoji at one fixed place in its cell (`data-*-256-snap`); `draw-canon` adds the
two- and three-object worlds with their emoji in fixed cells (`data-*-256-canon`), `draw-pairs` more two-object
scenes (the v11 package). `bind-canon` reads draw-pairs' worlds through the fifth T5; `scratch-canon` trains the
same worlds, resized to 128 px, from scratch through the fifth T5 (v12), which binds each name to its place;
`scratch-hires` takes it to 256 px (v13); `scratch-kv` adds KV compression on its deeper half;
`scratch-aspect` fine-tunes it on the same worlds also drawn at the other 256 px bucket sizes (`data-*-aspect`).
`aspect-canon` and `aspect-hires` train the scratch line again on those square and non-square worlds from its first
step, at 128 px (the non-square ones resized to the 128 px bucket sizes) and then at 256 px: the package's model
(v14); `aspect-kv` adds KV compression on its deeper half, on the same buckets. The stage tables are in
`pixart.demo.recipe`; the data, text encoder, VAE and cache stages in `pixart.demo.stages`; this module runs them,
trains the DiT stages and packages.

Each stage skips work already done (the trainers resume from their checkpoints), so the command can be killed and
re-run at any time; a finished stage leaves ROOT/<stage>.done and is skipped afterwards (except packaging, which is
cheap and always redone). A DiT stage's weights are not committed, but `--carry STAGE` writes them in fp16 as
dit-STAGE/carry-fp16.safetensors (the EMA or the raw weights: those the next stage starts from), to commit: a fresh
clone restores such a stage from it instead of training it again. To lengthen a finished DiT stage, raise
`max_steps` in its config and delete its .done file: it trains on from its last checkpoint. `--set STAGE.KEY=VALUE`
overrides a DiT stage's config for this run (e.g. a bigger batch on a GPU). Wall times are appended to
ROOT/build-times.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from pixart.demo import carry
from pixart.demo.carry import export_latest, latest_step
from pixart.demo.package import PACKAGE_DIR, export_for, stage_package
from pixart.demo.recipe import (
    BASE_SEGMENTS,
    CACHE,
    DIT_STAGES,
    MIX,
    PREVIOUS,
    STAGES,
)
from pixart.demo.stages import ensure_export_vae, preparation_steps

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent.parent


def _outputs(stage: str) -> list[str]:
    """What a finished stage leaves under ROOT. The .done files are committed with the logs but the datasets,
    caches and DiT weights are not, so on a fresh clone a stage whose outputs are missing runs again."""
    if stage == "data":
        return ["data-128/metadata.jsonl", "data-256/metadata.jsonl"]
    if stage in ("text_encoder", "vae"):
        return [f"export/{stage}/config.json"]
    if stage in ("text_encoder-v2", "text_encoder-v4", "text_encoder-v5"):
        v = stage.rpartition("-")[2]
        return [f"export-{v}/text_encoder/config.json", f"export-{v}/vae/config.json"]
    if stage.startswith(("data-", "cache-")):
        return [f"{stage}/{'metadata.jsonl' if stage.startswith('data-') else 'index.json'}"]
    return [f"dit-{stage}/final.safetensors"] if stage in (*DIT_STAGES, "grow") else []


def _timed(root: Path, stage: str, fn, *args) -> None:
    """Run a stage unless ROOT/STAGE.done says it finished and its outputs are there; record its wall time.
    Packaging (seconds) always runs, so `--package-from` can replace an interim package."""
    done = root / f"{stage}.done"
    missing = [name for name in _outputs(stage) if not (root / name).exists()]
    if done.exists() and stage != "package" and not missing:
        logger.info("stage %s: done earlier (%s), skipping; delete that file to redo it", stage, done)
        return
    if done.exists() and missing and restore_carry(root, stage):
        return
    if done.exists() and missing:
        logger.info("stage %s: %s says done but %s is missing (a fresh clone?): running it", stage, done, missing[0])
    start = time.time()
    fn(*args)
    entry = {"stage": stage, "seconds": round(time.time() - start, 1), "finished": time.strftime("%Y-%m-%d %H:%M")}
    with (root / "build-times.jsonl").open("a") as f:
        f.write(json.dumps(entry) + "\n")
    done.write_text(json.dumps(entry) + "\n")
    logger.info("stage %s took %.0f s", stage, entry["seconds"])


def _train_overrides(root: Path, stage: str, smoke: bool) -> list[str]:
    out = [
        f"output_dir={root / f'dit-{stage}'}",
        f"data.cache={root / CACHE[stage]}",
        f"data.text_encoder={root / export_for(stage)}",
        f"data.vae={root / export_for(stage) / 'vae'}",
    ]
    if stage in MIX:
        out.append(f"data.mix={json.dumps([str(root / cache) for cache, _ in MIX[stage]])}")
        out.append(f"data.mix_repeats={json.dumps([repeats for _, repeats in MIX[stage]])}")
    if stage in PREVIOUS:
        previous, weights = PREVIOUS[stage]
        out.append(f"model.init_from={root / f'dit-{previous}' / f'{weights}.safetensors'}")
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
    """Train one DiT stage with `pixart train`'s loop, then export its final weights (final.safetensors: the EMA
    when kept; final-raw.safetensors: the raw weights) and plot its log.csv as loss.png.

    The base stage runs as `BASE_SEGMENTS`: resumed with each segment's settings up to its step.
    `extra`: more `KEY=VALUE` overrides of the stage's config (after the build's own), e.g. `batch_size=256`.
    """
    from pixart.train.config import load_train_config
    from pixart.train.loop import main as train

    config, own = REPO / "configs" / "demo" / f"{stage}.toml", _train_overrides(root, stage, smoke)
    ensure_export_vae(root, export_for(stage))
    cfg = load_train_config(config, [*own, *extra])
    final = Path(cfg.output_dir) / "final.safetensors"
    step = latest_step(Path(cfg.output_dir))
    if final.exists() and (step is None or step >= cfg.max_steps):
        logger.info("stage %s: %s exists, skipping", stage, final)
        return
    if final.exists():  # max_steps was raised after the stage ended: train on from its last checkpoint
        logger.info("stage %s: %s is from step %d; training on to max_steps = %d", stage, final, step, cfg.max_steps)
    for until, settings in _segments(stage, cfg.max_steps):
        if step is None or step < until:
            train(load_train_config(config, [*own, *settings, *extra, f"max_steps={until}"]))
            step = until
    export_latest(Path(cfg.output_dir), final)
    export_latest(Path(cfg.output_dir), final.with_name("final-raw.safetensors"), ema=False)
    plot_losses(Path(cfg.output_dir), stage)


def _segments(stage: str, max_steps: int) -> list[tuple[int, tuple[str, ...]]]:
    """(train up to this step, with these settings) of a stage: the base's `BASE_SEGMENTS` up to `max_steps`
    (the config's, or a `--set base.max_steps`), any other stage in one piece."""
    if stage != "base":
        return [(max_steps, ())]
    out = []
    for until, settings in BASE_SEGMENTS:
        out.append((min(until, max_steps), settings))
        if until >= max_steps:
            break
    return out


def plot_losses(run_dir: Path, stage: str) -> Path | None:
    """RUN/loss.png: the loss and its MSE and VLB parts from RUN/log.csv, against the step (None: no log)."""
    from pixart.demo._common import plot_curves

    png = run_dir / "loss.png"
    if not (run_dir / "log.csv").exists():
        logger.warning("stage %s: no %s to plot", stage, run_dir / "log.csv")
        return None
    plot_curves(run_dir / "log.csv", png, ["loss", "mse", "vb"], title=f"demo DiT, stage {stage}: training loss")
    return png


def carried_weights(stage: str) -> str:
    """Which of a stage's final weights `--carry` keeps: those the next stage starts from (`PREVIOUS`), the EMA
    ("final") or the raw weights ("final-raw"); for a stage nothing starts from, the EMA, which is what
    `pixart.demo.report` scores and the package is made from."""
    return next((weights for previous, weights in PREVIOUS.values() if previous == stage), "final")


def write_carry(root: Path, stage: str) -> Path:
    """dit-STAGE/carry-fp16.safetensors from the stage's final weights that the next stage reads (`carried_weights`):
    committed when a later session must go on from a stage whose checkpoints a fresh clone will not have
    (`--carry STAGE`)."""
    return carry.write_carry(root / f"dit-{stage}", carried_weights(stage))


def restore_carry(root: Path, stage: str) -> bool:
    """On a fresh clone, a finished DiT stage whose weights were carried gets its final weights back from them."""
    return stage in DIT_STAGES and carry.restore_carry(root / f"dit-{stage}")


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
        choices=DIT_STAGES,
        help="instead of building: write ROOT/dit-STAGE/latest.safetensors from that run's newest checkpoint "
        "(EMA weights), e.g. to `pixart eval` a run in progress",
    )
    p.add_argument(
        "--carry",
        metavar="STAGE",
        choices=DIT_STAGES,
        help="instead of building: write ROOT/dit-STAGE/carry-fp16.safetensors from that stage's final weights "
        "(those the next stage starts from: EMA or raw), "
        "to commit; a fresh clone then restores the stage from it instead of training it again",
    )
    p.add_argument(
        "--package-from",
        default="aspect-hires",
        choices=DIT_STAGES,
        help="the DiT stage whose final.safetensors the package stage ships (aspect-hires: the v14 package; "
        "scratch-hires: v13, sessions 37-39; scratch-canon: v12, session 36; "
        "draw-pairs: v11, sessions 33-35; draw-snap: "
        "v10, sessions 29-32; draw-hires: "
        "v9, sessions 25-28; pair-kv: v8, session 24; draw-kv: v7, session 23; retext-kv: v6, sessions 21-22; "
        "kv: v5, sessions 17-20); for a stage still running, the snapshot --export-latest wrote (the model card "
        "gives its step)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="STAGE.KEY=VALUE",
        help=f"override a DiT stage's config ({', '.join(DIT_STAGES)}), as `pixart train --set`; repeatable, e.g. "
        "--set base.batch_size=256 --set base.max_steps=4000",
    )
    return p


def split_overrides(items: Sequence[str]) -> dict[str, list[str]]:
    """{"base": ["batch_size=256"], ...} from ["base.batch_size=256", ...]; ValueError names a bad item."""
    out: dict[str, list[str]] = {stage: [] for stage in DIT_STAGES}
    for item in items:
        stage, dot, rest = item.partition(".")
        if stage not in out or not dot or "=" not in rest:
            raise ValueError(f"--set {item!r}: expected STAGE.KEY=VALUE with STAGE one of {', '.join(DIT_STAGES)}")
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
    if args.carry:
        logger.info("wrote %s", write_carry(root, args.carry))
        return 0
    steps = {
        **preparation_steps(root, args.smoke),
        **{stage: (lambda stage=stage: stage_train(root, stage, args.smoke, extra[stage])) for stage in DIT_STAGES},
        "package": lambda: stage_package(root, args.smoke, Path(args.package_dir), args.package_from),
    }
    for stage in STAGES:
        if stage in stages:
            _timed(root, stage, steps[stage])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
