"""Score the demo model: each DiT stage, then sampler and step choices of the package, with `pixart eval`.

    python -m pixart.demo.report                        # every run below whose weights exist
    python -m pixart.demo.report --runs base,full,hires # some of them
    python -m pixart.demo.report --subset small         # fewer prompts (24), e.g. for a run in progress

Each run is one `pixart eval` command (printed, so it can be repeated by hand) writing report.json,
report.md, grid.png and images/ to ROOT/eval/NAME. A run whose report exists is skipped unless --force.
The table of every run found there goes to ROOT/eval/summary.md, with each run's seconds per image, and
the wall time of `pixart generate` with the package's defaults (the issue's "≤ 10 s, model load included").

A stage still training is scored from its `--export-latest` snapshot (ROOT/dit-STAGE/latest.safetensors),
and the table says at which step.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pixart.demo.build import REPO
from pixart.demo.package import PACKAGE_DIR, export_for

logger = logging.getLogger(__name__)

DEMO_PROMPT = "a red apple next to a cat on a blue background"
TIMING = "`pixart generate"  # how the summary's timing line starts


@dataclass(frozen=True)
class Run:
    """One `pixart eval` run: a name (its folder), what it shows, and the eval flags besides model and output."""

    name: str
    title: str
    flags: tuple[str, ...] = ()
    stage: str | None = None  # a DiT stage's own weights; None: the package


RUNS = (
    Run("base", "stage 1: 128 px", stage="base"),
    Run("full", "stage 1c: 128 px after the layout lesson", stage="full"),
    Run("hires", "stage 2: 256 px", stage="hires"),
    Run("hires-kv-free", "stage 2 + KV compression, training-free", ("--kv-compress",), stage="hires"),
    Run("kv", "stage 3: KV compression trained", stage="kv"),
    Run("retext-full", "stage 4b: second T5, 128 px", stage="retext-full"),
    Run("retext-mix", "stage 4d: second T5, three worlds mixed, 128 px", stage="retext-mix"),
    Run("retext-kv", "stage 4e: second T5, 256 px", stage="retext-kv"),
    Run("layout-mix", "stage 5a: fourth T5 (layout loss), three worlds mixed, 128 px", stage="layout-mix"),
    Run("layout-kv", "stage 5b: fourth T5 (layout loss), 256 px", stage="layout-kv"),
    Run("draw-singles", "stage 6b: second T5, one emoji a scene, 128 px", stage="draw-singles"),
    Run("draw-kv", "stage 6c: second T5, one emoji a scene, 256 px", stage="draw-kv"),
    Run("bind-mix", "stage 7a: fifth T5, three worlds mixed, 128 px", stage="bind-mix"),
    Run("pair-mix", "stage 8a: second T5, two emoji a scene mixed with one, 128 px", stage="pair-mix"),
    Run("pair-kv", "stage 8b: second T5, two emoji a scene mixed with one, 256 px", stage="pair-kv"),
    Run("draw-hires", "stage 9: second T5, centred, one- and two-emoji worlds, 256 px", stage="draw-hires"),
    Run("deep-hires", "stage 10a: stage 9 deepened to 12 blocks, the same worlds, 256 px", stage="deep-hires"),
    Run("draw-focus", "stage 10b: stage 9 on, loss weighted to the emoji, 256 px", stage="draw-focus"),
    Run("draw-mid", "stage 10c: stage 10b's loss, most steps at middle noise, 256 px", stage="draw-mid"),
    Run("draw-cool", "stage 10d: stage 9 with its lr brought down to 0, 256 px", stage="draw-cool"),
    Run("draw-snap", "stage 11: stage 9 on, each emoji at one fixed place in its cell, 256 px", stage="draw-snap"),
    Run("draw-canon", "stage 12: stage 11 on, two or three emoji in one set of cells each", stage="draw-canon"),
    Run("draw-pairs", "stage 13: stage 12 on, 4,000 more two-emoji scenes", stage="draw-pairs"),
    Run("bind-canon", "stage 14: stage 13 read through the fifth T5 (names know their role)", stage="bind-canon"),
    Run("scratch-canon", "stage 15: from scratch, fifth T5, stage 14's worlds at 128 px", stage="scratch-canon"),
    Run("scratch-hires", "stage 15b: stage 15 at 256 px", stage="scratch-hires"),
    Run("scratch-kv", "stage 15c: stage 15b with KV compression on blocks 4-7", stage="scratch-kv"),
    Run("scratch-hires-wide", "stage 15b at 320x192 (5:3)", ("--size", "320x192"), stage="scratch-hires"),
    Run("scratch-hires-tall", "stage 15b at 192x320 (3:5)", ("--size", "192x320"), stage="scratch-hires"),
    Run("scratch-aspect", "stage 15d: stage 15b on multi-aspect buckets", stage="scratch-aspect"),
    Run("scratch-aspect-wide", "stage 15d at 320x192 (5:3)", ("--size", "320x192"), stage="scratch-aspect"),
    Run("scratch-aspect-tall", "stage 15d at 192x320 (3:5)", ("--size", "192x320"), stage="scratch-aspect"),
    Run("aspect-canon", "stage 16: stage 15 on multi-aspect buckets from step 0, 128 px", stage="aspect-canon"),
    Run("aspect-hires", "stage 16b: stage 16 at 256 px, multi-aspect buckets", stage="aspect-hires"),
    Run("aspect-hires-wide", "stage 16b at 320x192 (5:3)", ("--size", "320x192"), stage="aspect-hires"),
    Run("aspect-hires-tall", "stage 16b at 192x320 (3:5)", ("--size", "192x320"), stage="aspect-hires"),
    Run("aspect-kv", "stage 16c: stage 16b with KV compression on blocks 4-7", stage="aspect-kv"),
    Run("aspect-kv-wide", "stage 16c at 320x192 (5:3)", ("--size", "320x192"), stage="aspect-kv"),
    Run("aspect-kv-tall", "stage 16c at 192x320 (3:5)", ("--size", "192x320"), stage="aspect-kv"),
    Run("package", "package, dpm-solver++ 20 steps (default)"),
    Run("package-wide", "package at 320x192 (5:3)", ("--size", "320x192")),
    Run("package-tall", "package at 192x320 (3:5)", ("--size", "192x320")),
    Run("package-dpm10", "package, dpm-solver++ 10 steps", ("--steps", "10")),
    Run("package-sa", "package, sa-solver 25 steps", ("--sampler", "sa-solver")),
    Run("package-ddim", "package, ddim 50 steps", ("--sampler", "ddim", "--steps", "50")),
    Run("package-euler", "package, euler 30 steps", ("--sampler", "euler", "--steps", "30")),
    Run("package-iddpm", "package, iddpm 100 steps", ("--sampler", "iddpm")),
    Run("package-cfg2.5", "package, dpm-solver++ 20 steps, cfg 2.5", ("--cfg", "2.5")),
    Run("package-cfg7", "package, dpm-solver++ 20 steps, cfg 7", ("--cfg", "7")),
    Run("package-long", "package, dense captions as prompts", ("--caption", "long")),
    Run("package-official-cfg", "package, CFG null branch with the prompt's mask", ("--cfg-semantics", "official")),
)


def stage_weights(root: Path, stage: str) -> tuple[Path, int | None] | None:
    """(weights, step) of a DiT stage: final.safetensors (step None), else the latest snapshot, else None."""
    run_dir = root / f"dit-{stage}"
    if (run_dir / "final.safetensors").exists():
        return run_dir / "final.safetensors", None
    latest = run_dir / "latest.safetensors"
    if latest.exists():
        return latest, json.loads(latest.with_suffix(".json").read_text())["step"]
    return None


def stage_size(run_dir: Path) -> list[str]:
    """["--size", "RxR"] for the resolution a DiT stage trained at (its run's config.json), or [] without one.

    A 128 px stage that starts from a 256 px model keeps that model's configured sample size, so without this it
    would be scored at 256 px, a size it was not trained at."""
    config = run_dir / "config.json"
    if not config.exists():
        return []
    res = json.loads(config.read_text()).get("data", {}).get("resolution")
    return ["--size", f"{res}x{res}"] if res else []


def eval_command(run: Run, root: Path, package: Path, subset: str) -> tuple[list[str], str] | None:
    """The `pixart eval` arguments of a run and its column title, or None when its weights do not exist."""
    out = root / "eval" / run.name
    if run.stage is None:
        if not (package / "model_index.json").exists():
            return None
        model, title = ["--model", str(package)], run.title
    else:
        found = stage_weights(root, run.stage)
        if found is None:
            return None
        weights, step = found
        export = root / export_for(run.stage)
        model = ["--model", str(weights), "--text-encoder", str(export), "--vae", str(export / "vae")]
        model += stage_size(root / f"dit-{run.stage}")
        title = run.title + ("" if step is None else f" (step {step}, still training)")
    return ["eval", *model, "--subset", subset, *run.flags, "--out", str(out), "--force"], title


def time_generate(package: Path, repeats: int = 3) -> list[float]:
    """Wall seconds of `pixart generate DEMO_PROMPT` with the package's defaults, each in a fresh process."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            cmd = [sys.executable, "-m", "pixart.cli", "generate", DEMO_PROMPT, "--model", str(package),
                   "--out", str(Path(tmp) / f"{i}.png")]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return times


def write_summary(root: Path, generate: list[float] | None) -> Path:
    """ROOT/eval/summary.md: one column per run found in ROOT/eval, and the timing of `pixart generate` (`generate`;
    None: the timing line the summary had before, if any)."""
    from pixart.eval.run import markdown_table

    summaries, rows = {}, []
    for run in RUNS:
        report = root / "eval" / run.name / "report.json"
        if not report.exists():
            continue
        data = json.loads(report.read_text())
        title = data.get("title", run.title)
        summaries[title] = data["summary"]
        s = data["settings"]
        per_image = data.get("seconds_per_image")
        rows.append(f"| {title} | {s['sampler']} | {s['steps']} | {s['cfg']:g} | {s['size']} | {s['prompts']} "
                    f"| {'–' if per_image is None else f'{per_image:.2f}'} |")  # fmt: skip
    lines = ["# Demo model: prompt adherence (`python -m pixart.demo.report`)", "", markdown_table(summaries), ""]
    lines += ["| run | sampler | steps | cfg | size | prompts | s / image |", "|---|---|---:|---:|---|---:|---:|"]
    lines += rows
    path = root / "eval" / "summary.md"
    if generate:
        lines += ["", f"`pixart generate \"{DEMO_PROMPT}\"` with the package's defaults, wall seconds in a fresh "
                  f"process (model load included): {', '.join(f'{t:.1f}' for t in generate)}"]  # fmt: skip
    elif path.exists():  # not timed this time (--no-timing): keep the last timing
        lines += ["", *(line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith(TIMING))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    from pixart.cli import main as cli

    p = argparse.ArgumentParser(
        prog="python -m pixart.demo.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", default=str(REPO / "runs" / "demo"), help="the build's working folder")
    p.add_argument("--package-dir", default=str(PACKAGE_DIR), help="the packaged model folder")
    p.add_argument("--runs", default=",".join(r.name for r in RUNS), help="comma-separated subset of the runs")
    p.add_argument("--subset", default="standard", help="prompt-set size, as `pixart eval --subset`")
    p.add_argument("--force", action="store_true", help="redo runs that already have a report")
    p.add_argument("--no-timing", action="store_true", help="skip timing `pixart generate`")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root, package = Path(args.root), Path(args.package_dir)
    wanted = [s.strip() for s in args.runs.split(",") if s.strip()]
    unknown = sorted(set(wanted) - {r.name for r in RUNS})
    if unknown:
        p.error(f"unknown runs {unknown}; allowed: {', '.join(r.name for r in RUNS)}")
    for run in RUNS:
        if run.name not in wanted:
            continue
        found = eval_command(run, root, package, args.subset)
        if found is None:
            logger.info("run %s: no weights yet, skipped", run.name)
            continue
        command, title = found
        report = root / "eval" / run.name / "report.json"
        if report.exists() and not args.force:
            logger.info("run %s: %s exists, skipped (--force redoes it)", run.name, report)
            continue
        logger.info("run %s: pixart %s", run.name, " ".join(command))
        start = time.perf_counter()
        if cli(command) != 0:
            raise RuntimeError(f"pixart {' '.join(command)} failed")
        data = json.loads(report.read_text())
        data["title"] = title
        data["seconds_per_image"] = (time.perf_counter() - start) / data["summary"]["images"]
        report.write_text(json.dumps(data, indent=2) + "\n")
    generate = None
    if not args.no_timing and (package / "model_index.json").exists():
        generate = time_generate(package)
    logger.info("wrote %s", write_summary(root, generate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
