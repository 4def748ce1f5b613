"""Helpers shared by the demo trainers: atomic saves, resumable CSV logs, LR schedule, a PIL loss plot.

Kept free of model code so the text-encoder and VAE trainers read top-down on their own.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


# ---- files ------------------------------------------------------------------------------------------------------


def atomic_torch_save(obj: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """torch.save to a temp file in the same folder, then os.replace: a kill at any moment leaves the old file.

    `obj` must hold only tensors and plain Python types, so `torch.load(weights_only=True)` reads it back.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by `atomic_torch_save` (weights_only: only tensors and plain types are unpickled)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def replace_dir(write: Callable[[Path], None], dst: str | os.PathLike[str]) -> None:
    """Call `write(tmp_dir)`, then swap tmp_dir into `dst`; a failure leaves the previous `dst` untouched."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = dst.with_name(f".{dst.name}.tmp"), dst.with_name(f".{dst.name}.old")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    write(tmp)
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    if old.exists():
        shutil.rmtree(old)


def folder_mb(path: str | os.PathLike[str]) -> float:
    """Total size of the files under `path`, in MB (1e6 bytes)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


# ---- schedule ---------------------------------------------------------------------------------------------------


def cosine_lr(step: int, steps: int, lr: float, warmup: int, min_frac: float = 0.05) -> float:
    """Linear warm-up for `warmup` steps, then cosine decay to `min_frac * lr` at `steps` (0-based step)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * t)))


# ---- logs -------------------------------------------------------------------------------------------------------


class CsvLog:
    """Append-only CSV of training rows that survives kill -9: rows past the resumed step are dropped on open.

    Each row is flushed as written, so the file never lags the last checkpoint by more than the unsaved steps,
    and resuming from step S first removes rows with step > S (they will be recomputed identically).
    """

    def __init__(self, path: str | os.PathLike[str], fields: Sequence[str], resume_step: int = 0) -> None:
        self.path, self.fields = Path(path), list(fields)
        rows = read_csv(self.path) if resume_step > 0 and self.path.is_file() else []
        rows = [r for r in rows if int(r["step"]) <= resume_step]
        self._file = open(self.path, "w", newline="")  # noqa: SIM115 - closed in close()
        self._writer = csv.DictWriter(self._file, self.fields, extrasaction="ignore")
        self._writer.writeheader()
        self._writer.writerows(rows)
        self._file.flush()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(
    csv_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    columns: Sequence[str],
    *,
    title: str = "",
    log_y: bool = True,
    smooth: int = 20,
    size: tuple[int, int] = (640, 400),
) -> None:
    """Draw columns of a training CSV against `step` as a PNG with PIL (no matplotlib needed).

    Each column gets its own colour; a moving average over `smooth` rows is drawn over the raw values (faint).
    """
    rows = read_csv(csv_path)
    series = {}
    for col in columns:
        pts = [(int(r["step"]), float(r[col])) for r in rows if r.get(col) not in (None, "", "nan")]
        pts = [(s, v) for s, v in pts if math.isfinite(v) and (v > 0 or not log_y)]
        if pts:
            series[col] = pts
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 60, w - 10, 24, h - 30
    draw.rectangle((left, top, right, bottom), outline="black")
    draw.text((left, 4), title, fill="black")
    if not series:
        img.save(png_path)
        return
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    xs = [s for pts in series.values() for s, _ in pts]
    ys = [fy(v) for pts in series.values() for _, v in pts]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(max(ys), min(ys) + 1e-6)

    def to_px(s: float, v: float) -> tuple[float, float]:
        return left + (s - x0) / (x1 - x0) * (right - left), bottom - (fy(v) - y0) / (y1 - y0) * (bottom - top)

    for i in range(5):  # y tick labels
        yv = y0 + (y1 - y0) * i / 4
        py = bottom - (bottom - top) * i / 4
        draw.line((left - 3, py, left, py), fill="black")
        draw.text((2, py - 6), f"{10**yv if log_y else yv:.3g}", fill="black")
    draw.text((left, bottom + 6), f"step {x0}", fill="black")
    draw.text((right - 70, bottom + 6), f"step {x1}", fill="black")
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    faint = ["#aac8e0", "#eeb0b0", "#b0dcb0", "#d4c4e4", "#ffd0a8", "#d8c0b8"]
    for i, (col, pts) in enumerate(series.items()):
        draw.line([to_px(s, v) for s, v in pts], fill=faint[i % 6], width=1)
        k = max(1, min(smooth, len(pts) // 4 or 1))
        avg = [
            (pts[j][0], sum(v for _, v in pts[max(0, j - k + 1) : j + 1]) / (j - max(0, j - k + 1) + 1))
            for j in range(len(pts))
        ]
        draw.line([to_px(s, v) for s, v in avg], fill=colours[i % 6], width=2)
        draw.text((right - 150, top + 6 + 14 * i), f"{col}: {pts[-1][1]:.4g}", fill=colours[i % 6])
    img.save(png_path)


def setup_logging(level: str = "INFO", log_file: str | os.PathLike[str] | None = None) -> None:
    """Console logging plus, optionally, a text log file (used by the CLI mains only)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers)


def run_trainer(args: Any, default_run_dir: str, train: Callable[[Path], object]) -> int:
    """The demo trainers' command-line body: run dir (OUT/default_run_dir unless --run-dir), train.log, threads,
    then `train(run_dir)`; a config or numeric failure is logged as one line and gives exit code 2."""
    run_dir = Path(args.run_dir or Path(args.out) / default_run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(args.log_level, run_dir / "train.log")
    torch.set_num_threads(args.threads)
    try:
        train(run_dir)
    except (ValueError, KeyError, FloatingPointError) as e:
        logger.error("%s", e)
        return 2
    return 0
