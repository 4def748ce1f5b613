"""`pixart eval` behind the command line: generate the prompt set, score each image, summarise and report.

    from pixart.eval.run import evaluate, self_test, summarize, markdown_table
    results = evaluate(pipe, prompt_set(100, 256, 256), steps=20, cfg=4.5, sampler="dpm-solver++", seed=0)
    print(markdown_table({"demo": summarize(results)}))

Scores are GenEval's: per check category the fraction of checks passed; "overall" the fraction of images whose
every check passed; "mean" the mean of the category accuracies. `self_test` measures the scorer itself on real
renders of the same scenes, as drawn, after a decoder-like lossy round trip (`lossy_round_trip`) and optionally
after a real VAE's encode-decode (`vae_round_trip`).
"""

from __future__ import annotations

import io
import json
import logging
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from pixart.data.emoji import render_scene
from pixart.eval.prompts import KINDS, EvalPrompt
from pixart.eval.scorer import CATEGORIES, ImageScore, score_image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """One prompt's image and its score."""

    prompt: EvalPrompt
    image: Image.Image
    score: ImageScore
    seed: int | None = None  # generation seed; None for a render


# ---- scoring ----------------------------------------------------------------------------------------------------


def evaluate(
    pipe,
    prompts: Sequence[EvalPrompt],
    *,
    steps: int,
    cfg: float,
    sampler: str,
    seed: int,
    batch: int = 1,
    cfg_semantics: str = "diffusers",
    progress: Callable[[int], None] | None = None,
) -> list[Result]:
    """Generate one image per prompt (prompt i with seed `seed + i`, as `pixart generate`) and score it.

    Args:
        pipe: a `Text2Image`; images are generated at each scene's size.
        batch: prompts per `generate` call (same images as one at a time: each keeps its own seed).
        cfg_semantics: which mask the unconditional branch uses, as `Text2Image.generate`.
        progress: called with the number of images done after each batch.
    """
    if batch < 1:
        raise ValueError(f"batch={batch}: must be >= 1")
    text = pipe.encode([p.prompt for p in prompts])
    results = []
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start : start + batch])
        sizes = {(p.scene.width, p.scene.height) for p in chunk}
        if len(sizes) != 1:
            raise ValueError(f"one batch needs one image size, got {sorted(sizes)}")
        ((width, height),) = sizes
        images = pipe.generate(
            text.select(list(range(start, start + len(chunk)))),
            width=width,
            height=height,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            seed=seed + start,
            cfg_semantics=cfg_semantics,
            check_memory=False,
            output="pil",
        )
        for k, (p, image) in enumerate(zip(chunk, images, strict=True)):
            results.append(Result(p, image, score_image(image, p.scene, p.caption), seed + start + k))
        if progress is not None:
            progress(len(results))
    return results


def lossy_round_trip(image: Image.Image) -> Image.Image:
    """A decoder-like degradation: half-size and back (bicubic), a slight blur, then JPEG at quality 75."""
    w, h = image.size
    soft = image.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BILINEAR)
    soft = soft.resize((w, h), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(0.8))
    buffer = io.BytesIO()
    soft.convert("RGB").save(buffer, format="JPEG", quality=75)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def vae_round_trip(vae) -> Callable[[Image.Image], Image.Image]:
    """Encode with a `pixart.vae.VAE` (posterior mean) and decode: a perfect generator's image after its decoder."""
    import numpy as np
    import torch

    def round_trip(image: Image.Image) -> Image.Image:
        x = torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        with torch.no_grad():
            latent = vae.model.encode(x.to(vae.device, vae.dtype)).latent_dist.mean * vae.scaling_factor
        y = vae.decode(latent)[0].clamp(-1, 1)  # (3, H, W)
        return Image.fromarray(((y.permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().astype(np.uint8))

    return round_trip


def self_test(
    prompts: Sequence[EvalPrompt],
    *,
    degrade: Callable[[Image.Image], Image.Image] | None = None,
) -> list[Result]:
    """Score real renders of the prompts' scenes: the scorer's own accuracy.

    Args:
        degrade: applied to each render first, e.g. `lossy_round_trip` or `vae_round_trip(vae)`.
    """
    results = []
    for p in prompts:
        image = render_scene(p.scene)
        image = degrade(image) if degrade is not None else image
        results.append(Result(p, image, score_image(image, p.scene, p.caption)))
    return results


# ---- summaries --------------------------------------------------------------------------------------------------


def summarize(results: Sequence[Result]) -> dict[str, Any]:
    """Per-category check accuracy, overall image pass rate, their mean, and the pass rate per prompt kind."""
    if not results:
        raise ValueError("no results to summarise")
    categories = {}
    for c in CATEGORIES:
        passed = sum(r.score.tally()[c][0] for r in results)
        total = sum(r.score.tally()[c][1] for r in results)
        categories[c] = {"passed": passed, "total": total, "accuracy": passed / total if total else None}
    rates = [v["accuracy"] for v in categories.values() if v["accuracy"] is not None]
    kinds = {}
    for kind in KINDS:
        group = [r for r in results if r.prompt.kind == kind]
        if group:
            ok = sum(r.score.passed for r in group)
            kinds[kind] = {"images": len(group), "passed": ok, "overall": ok / len(group)}
    passed = sum(r.score.passed for r in results)
    return {
        "images": len(results),
        "passed": passed,
        "overall": passed / len(results),
        "mean": sum(rates) / len(rates),
        "categories": categories,
        "kinds": kinds,
    }


def markdown_table(summaries: dict[str, dict[str, Any]]) -> str:
    """One column per summary: accuracy (passed/total) per category, overall and mean; then pass rate per kind."""
    names = list(summaries)
    lines = ["| check | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]

    def cell(accuracy: float | None, passed: int | None = None, total: int | None = None) -> str:
        if accuracy is None:
            return "–"
        return f"{accuracy:.3f}" + (f" ({passed}/{total})" if total is not None else "")

    for c in CATEGORIES:
        row = [
            cell(s["categories"][c]["accuracy"], s["categories"][c]["passed"], s["categories"][c]["total"])
            for s in summaries.values()
        ]
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    row = [cell(s["overall"], s["passed"], s["images"]) for s in summaries.values()]
    lines.append("| **overall** (image passes every check) | " + " | ".join(f"**{r}**" for r in row) + " |")
    lines.append("| mean of the categories | " + " | ".join(cell(s["mean"]) for s in summaries.values()) + " |")
    for kind in KINDS:
        if any(kind in s["kinds"] for s in summaries.values()):
            row = [
                cell(k["overall"], k["passed"], k["images"]) if (k := s["kinds"].get(kind)) else "–"
                for s in summaries.values()
            ]
            lines.append(f"| overall, {kind} prompts | " + " | ".join(row) + " |")
    return "\n".join(lines)


def result_records(results: Sequence[Result], image_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """JSON-ready per-image records: prompt, scene, seed, verdict, checks and detections."""
    records = []
    for i, r in enumerate(results):
        record = {"index": r.prompt.index, "kind": r.prompt.kind, "prompt": r.prompt.prompt, "seed": r.seed}
        if image_names is not None:
            record["image"] = image_names[i]
        record.update(r.score.to_dict())
        record["scene"] = r.prompt.scene.to_dict()
        records.append(record)
    return records


# ---- files ------------------------------------------------------------------------------------------------------


def save_grid(results: Sequence[Result], path: str | Path, *, columns: int = 4, limit: int = 16) -> Path:
    """A PNG grid of the first `limit` images, each over its prompt and verdict (PASS, or the failed checks)."""
    shown = list(results[:limit])
    if not shown:
        raise ValueError("no images for the grid")
    tile = 192
    font = ImageFont.load_default()
    line_height = 12
    texts = []  # per image: [(line, colour)], the prompt in black, the verdict in green or red
    for r in shown:
        failed = [_failure(c) for c in r.score.checks if not c.passed]
        verdict = "PASS" if r.score.passed else "FAIL " + "; ".join(failed)
        colour = (0, 120, 0) if r.score.passed else (180, 0, 0)
        lines = [(t, (0, 0, 0)) for t in textwrap.wrap(r.prompt.prompt, 34)]
        texts.append((lines + [(t, colour) for t in textwrap.wrap(verdict, 34)])[:8])
    caption_height = line_height * max(len(t) for t in texts) + 6
    columns = min(columns, len(shown))
    rows = -(-len(shown) // columns)
    grid = Image.new("RGB", (columns * (tile + 8) + 8, rows * (tile + caption_height + 8) + 8), "white")
    draw = ImageDraw.Draw(grid)
    for i, (r, lines) in enumerate(zip(shown, texts, strict=True)):
        x = 8 + (i % columns) * (tile + 8)
        y = 8 + (i // columns) * (tile + caption_height + 8)
        scale = tile / max(r.image.size)
        size = (max(1, round(r.image.width * scale)), max(1, round(r.image.height * scale)))
        image = r.image.resize(size, Image.Resampling.LANCZOS)
        grid.paste(image, (x + (tile - image.width) // 2, y + (tile - image.height) // 2))
        for k, (line, colour) in enumerate(lines):
            draw.text((x, y + tile + 3 + k * line_height), line, fill=colour, font=font)
    path = Path(path)
    grid.save(path)
    return path


def _failure(check) -> str:
    """'count cat: 1 (want 2)', 'background: purple (want red)'."""
    subject = check.category if check.subject == check.category else f"{check.category} {check.subject}"
    return f"{subject}: {check.found} (want {check.expected})"


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write a report as indented UTF-8 JSON (via a temp file, so a crash never leaves half a report)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
