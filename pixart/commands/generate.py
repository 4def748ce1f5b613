"""Generate images from text prompts with a PixArt-Σ model.

Examples:
  pixart generate "a small cactus with a happy face in the Sahara desert" --model PixArt-Sigma-XL-2-1024-MS
  pixart generate --prompts-file prompts.txt --model ckpt.pth --text-encoder t5/ --vae sdxl-vae/ --n 4 --seed 7
  pixart generate "a lighthouse at dawn" --aspect 16:9 --sampler sa-solver --out lighthouse.png

Image k of a run (prompt-major: all --n images of the first prompt, then the next prompt's) uses seed S + k,
so `--seed S+k --n 1` regenerates it alone; its seed is stored in the PNG's `parameters` text.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from pixart.aspect import parse_aspect, parse_size
from pixart.config import KV_SAMPLINGS, get_preset
from pixart.diffusion.schedules import SAMPLERS, get_sampler

logger = logging.getLogger(__name__)

DTYPE_NAMES = {"auto": None, "fp32": "fp32", "float32": "fp32", "fp16": "fp16", "float16": "fp16",
               "bf16": "bf16", "bfloat16": "bf16"}  # fmt: skip
MAX_IMAGES = 10_000
BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="*", help="prompt text(s); each gets --n images")
    parser.add_argument("--prompts-file", metavar="F", help="more prompts, one per line (# comments, blanks skipped)")
    parser.add_argument("--embeddings", metavar="F", help="precomputed prompt embeddings (see --save-embeddings)")
    parser.add_argument("--save-embeddings", metavar="F", help="encode the prompts to F (safetensors) and stop")
    model_help = "PixArt-Σ pipeline folder (diffusers layout), or a transformer checkpoint (.pth, .safetensors) used "
    parser.add_argument("--model", metavar="PATH", help=model_help + "with --text-encoder and --vae; None: bundled")
    parser.add_argument("--preset", metavar="NAME", help="config of a checkpoint that has none (official .pth); "
                        "guessed from the file name when it is a released one")  # fmt: skip
    parser.add_argument("--text-encoder", metavar="DIR", help="T5 folder (or a pipeline folder with text_encoder/)")
    parser.add_argument("--vae", metavar="DIR", help="AutoencoderKL folder (or a pipeline folder with vae/)")
    parser.add_argument("--negative", default="", metavar="TEXT", help="negative prompt (the CFG null branch)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", metavar="WxH", help="image size in pixels, multiples of 16; None: native square")
    size.add_argument("--aspect", metavar="W:H", help="width:height, e.g. 16:9; the closest trained size bin")
    parser.add_argument("--sampler", default="dpm-solver++", help=f"one of {', '.join(SAMPLERS)}")
    parser.add_argument("--steps", metavar="N", help="sampling steps; None: the sampler's (dpm-solver++: 20)")
    parser.add_argument("--cfg", metavar="G", help="guidance scale, 1 = none; None: the sampler's (4.5)")
    parser.add_argument("--cfg-semantics", default="diffusers", metavar="S",
                        help="null branch mask: diffusers (its own) or official (the prompt's)")  # fmt: skip
    parser.add_argument("--seed", metavar="S", help="seed of image 0; image k uses S + k; None: random")
    parser.add_argument("--n", default="1", metavar="N", help="images per prompt")
    parser.add_argument("--out", default="outputs", metavar="DIR|FILE", help="folder, or a .png file name")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="fp32, bf16, fp16 or auto (fp32 on CPU, bf16/fp16 on GPU)")
    parser.add_argument("--offload", action="store_true", help="GPU: keep components in CPU memory between steps")
    parser.add_argument("--kv-compress", action="store_true", help="training-free KV compression (faster, worse)")
    parser.add_argument("--kv-layers", metavar="L", help="blocks to compress: 14-27 or 0,2,4; None: last half")
    parser.add_argument("--kv-factor", default="2", metavar="F", help="K/V downsampling per side")
    parser.add_argument("--kv-sampling", default="conv", metavar="S", help=f"one of {', '.join(KV_SAMPLINGS)}")
    parser.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="FILE",
        help="LoRA adapter file to merge (lora.safetensors from a LoRA training run); repeatable",
    )
    parser.add_argument(
        "--lora-scale",
        action="append",
        default=[],
        metavar="S",
        help="strength of each --lora, in the same order (default 1.0)",
    )
    parser.add_argument("--tile-vae", default="auto", metavar="WHEN", help="tiled VAE decode: auto, on or off")
    parser.add_argument("--tile-size", metavar="PX", help="VAE tile side in pixels; None: the VAE's (1024)")
    parser.add_argument("--skip-memory-check", action="store_true", help="do not refuse when memory looks short")


# ---- validation (nothing is loaded until all of it passed) --------------------------------------------------------


@dataclass
class Plan:
    """Everything `run` needs, validated."""

    prompts: list[str]
    steps: int
    cfg: float
    n: int
    seed: int
    size: tuple[int, int] | None
    aspect: str | None
    dtype: str | None
    kv_layers: list[int] | None
    kv_factor: int
    tile: bool | None
    tile_size: int | None


def _number(flag: str, text: str | None, kind: type, *, minimum: float, allowed: str) -> int | float | None:
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: must be {allowed}") from None
    if (kind is float and not math.isfinite(value)) or value < minimum:
        raise ValueError(f"{flag} {text}: must be {allowed}")
    return value


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = [p for p in args.prompt if p.strip()]
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts-file {str(path)!r} does not exist")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        from_file = [line for line in lines if line and not line.startswith("#")]
        if not from_file:
            raise ValueError(f"--prompts-file {str(path)!r} has no prompts (one per line; blanks and # lines skipped)")
        prompts += from_file
    if args.embeddings and prompts:
        raise ValueError("give prompts or --embeddings, not both (the embeddings file holds its prompts)")
    if not prompts and not args.embeddings:
        raise ValueError("no prompt: give PROMPT text, --prompts-file F or --embeddings F")
    return prompts


def parse_layers(text: str) -> list[int]:
    """'14-27' / '0,2,4' / '0-3,8' -> sorted block indices."""
    layers: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise ValueError(f"--kv-layers {text!r}: expected block indices like 14-27 or 0,2,4")
        layers.update(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return sorted(layers)


def validate(args: argparse.Namespace) -> Plan:
    """Check every flag; raises ValueError/FileNotFoundError with one line naming the value and what is allowed."""
    prompts = read_prompts(args)
    get_sampler(args.sampler)
    if args.preset:
        get_preset(args.preset)
    steps = _number("--steps", args.steps, int, minimum=1, allowed="an integer >= 1")
    cfg = _number("--cfg", args.cfg, float, minimum=0, allowed="a finite number >= 0 (1 = no guidance)")
    n = _number("--n", args.n, int, minimum=1, allowed=f"an integer from 1 to {MAX_IMAGES}")
    if n > MAX_IMAGES:
        raise ValueError(f"--n {n}: must be an integer from 1 to {MAX_IMAGES}")
    seed = _number("--seed", args.seed, int, minimum=0, allowed="an integer from 0 to 2**63 - 1")
    if seed is not None and seed >= 2**63:
        raise ValueError(f"--seed {seed}: must be an integer from 0 to 2**63 - 1")
    if args.cfg_semantics not in ("diffusers", "official"):
        raise ValueError(f"--cfg-semantics {args.cfg_semantics!r}: allowed are diffusers, official")
    size = parse_size(args.size) if args.size else None
    if args.aspect:
        parse_aspect(args.aspect)
    if args.dtype not in DTYPE_NAMES:
        raise ValueError(f"--dtype {args.dtype!r}: allowed are {', '.join(DTYPE_NAMES)}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", args.device):
        raise ValueError(f"--device {args.device!r}: allowed are auto, cpu, cuda, cuda:N, mps")
    kv_factor = _number("--kv-factor", args.kv_factor, int, minimum=2, allowed="an integer >= 2")
    if args.kv_sampling not in KV_SAMPLINGS:
        raise ValueError(f"--kv-sampling {args.kv_sampling!r}: allowed are {', '.join(KV_SAMPLINGS)}")
    kv_layers = parse_layers(args.kv_layers) if args.kv_layers else None
    if kv_layers is not None and not args.kv_compress:
        raise ValueError("--kv-layers needs --kv-compress")
    tiles = {"auto": None, "on": True, "off": False}
    if args.tile_vae not in tiles:
        raise ValueError(f"--tile-vae {args.tile_vae!r}: allowed are auto, on, off")
    tile_size = _number("--tile-size", args.tile_size, int, minimum=64, allowed="a multiple of 8 >= 64 px")
    if tile_size is not None and tile_size % 8:
        raise ValueError(f"--tile-size {tile_size}: must be a multiple of 8 >= 64 px")
    if len(args.lora_scale) > len(args.lora):
        raise ValueError(f"{len(args.lora_scale)} --lora-scale values for {len(args.lora)} --lora files")
    for scale in args.lora_scale:
        _number("--lora-scale", scale, float, minimum=-math.inf, allowed="a finite number")
    for lora in args.lora:
        if not Path(lora).is_file():
            raise FileNotFoundError(f"--lora {lora!r} does not exist")
    if args.embeddings and not Path(args.embeddings).is_file():
        raise FileNotFoundError(f"--embeddings {args.embeddings!r} does not exist")
    if args.save_embeddings:
        check_output_file(Path(args.save_embeddings), args.force, "--save-embeddings")
    if seed is None:
        seed = random.randrange(2**32)
        logger.info("seed %d (random; image k uses %d + k)", seed, seed)
    return Plan(prompts, steps, cfg, n, seed, size, args.aspect, DTYPE_NAMES[args.dtype], kv_layers, kv_factor,
                tiles[args.tile_vae], tile_size)  # fmt: skip


# ---- output files ------------------------------------------------------------------------------------------------


def check_writable_dir(folder: Path, flag: str) -> None:
    """`folder` exists as a writable directory, or can be created (its nearest existing parent is one)."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{flag} {str(folder)!r}: cannot create it, {str(probe)!r} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {str(folder)!r}: {str(probe)!r} is not writable")


def check_output_file(path: Path, force: bool, flag: str) -> None:
    if path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a folder; give a file name")
    if path.exists() and not force:
        raise FileExistsError(f"{flag} {str(path)!r} exists; pass --force to overwrite it")
    check_writable_dir(path.parent, flag)


def _slug(prompt: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:limit].rstrip("-") or "image"


def plan_outputs(out: str, prompts: list[str], n: int, seed: int, force: bool) -> list[Path]:
    """The PNG path of each image, checked before anything runs: nothing is ever overwritten without --force.

    A `.png` --out names the file (`name-K.png` for several images); otherwise --out is a folder and images
    are numbered after the highest number already there.
    """
    total = len(prompts) * n
    path = Path(out)
    if path.suffix.lower() == ".png":
        paths = [path] if total == 1 else [path.with_name(f"{path.stem}-{k}{path.suffix}") for k in range(total)]
        for p in paths:
            check_output_file(p, force, "--out")
        return paths
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out!r} exists and is not a folder; give a folder or a .png file name")
    check_writable_dir(path, "--out")
    names = [f.name for f in path.iterdir()] if path.is_dir() else []
    taken = [int(m.group(1)) for name in names if (m := re.match(r"(\d{5})-", name))]
    start = max(taken, default=-1) + 1
    return [path / f"{start + k:05d}-{seed + k}-{_slug(prompts[k // n])}.png" for k in range(total)]


# ---- run ------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    plan = validate(args)
    model = Path(args.model) if args.model else BUNDLED_MODEL
    if not args.model and not BUNDLED_MODEL.is_dir():
        raise ValueError(
            "no model is bundled with this version yet: pass --model PATH (a diffusers-layout PixArt-Σ folder, "
            "or a .pth/.safetensors checkpoint with --text-encoder DIR and --vae DIR)"
        )
    from pixart.aspect import check_size, size_for_aspect
    from pixart.components import DTYPES
    from pixart.pipeline import Text2Image
    from pixart.text import PromptEmbeddings

    embeddings = PromptEmbeddings.load(args.embeddings) if args.embeddings else None
    if embeddings is not None:
        if args.negative:
            raise ValueError("the negative prompt is part of the --embeddings file; drop --negative")
        plan.prompts = list(embeddings.prompts)
    pipe = Text2Image.from_pretrained(
        model, text_encoder=args.text_encoder, vae=args.vae, need_text_encoder=embeddings is None, preset=args.preset,
        device=args.device, dtype=DTYPES.get(plan.dtype), offload=args.offload, keep_text_encoder=False,
    )  # fmt: skip
    cfg = pipe.model_config  # from the checkpoint header; nothing loaded yet
    if plan.size:
        width, height = plan.size
        check_size(width, height, multiple=8 * cfg.patch_size, what=f"--size {args.size}")
    elif plan.aspect:
        width, height = size_for_aspect(plan.aspect, pipe.native_size)
    else:
        width = height = pipe.native_size
    if args.save_embeddings:
        pipe.encode(plan.prompts, args.negative).save(args.save_embeddings)
        print(args.save_embeddings)
        return 0
    outputs = plan_outputs(args.out, plan.prompts, plan.n, plan.seed, args.force)
    if args.kv_compress:
        pipe.enable_kv_compression(plan.kv_layers, plan.kv_factor, args.kv_sampling)
    scales = [float(s) for s in args.lora_scale] + [1.0] * (len(args.lora) - len(args.lora_scale))
    for lora, scale in zip(args.lora, scales, strict=True):
        pipe.add_lora(lora, scale)
    spec = get_sampler(args.sampler)
    steps = plan.steps or spec.steps
    guidance = spec.cfg if plan.cfg is None else plan.cfg
    if not args.skip_memory_check:
        pipe.estimate_memory(
            width, height, guided=guidance != 1.0, encode=embeddings is None, tile_vae=plan.tile,
            tile_size=plan.tile_size,
        ).check()  # fmt: skip

    text = embeddings or pipe.encode(plan.prompts, args.negative)  # T5 is freed right after
    extra = {"CFG semantics": args.cfg_semantics} if args.cfg_semantics != "diffusers" else {}
    kv = pipe.kv_compression
    if kv is not None:
        extra["KV compress"] = f"blocks {kv[0]}, factor {kv[1]}, {kv[2]}"
    if args.lora:
        extra["LoRA"] = ", ".join(f"{Path(f).name}:{s:g}" for f, s in zip(args.lora, scales, strict=True))
    settings = {"Steps": steps, "Sampler": args.sampler, "CFG scale": guidance, "Seed": None,
                "Size": f"{width}x{height}", "Model": pipe.name, **extra}  # fmt: skip
    _generate_all(pipe, text, plan, outputs, (width, height, steps, guidance), args, settings)
    return 0


def _generate_all(pipe, text, plan: Plan, outputs: list[Path], sampling: tuple, args, settings: dict) -> None:
    """Generate and save one image at a time, each with its own progress bar; print each path when written."""
    from tqdm import tqdm

    from pixart.png import format_parameters, save_png

    width, height, steps, guidance = sampling
    for k, path in enumerate(outputs):
        p, seed = k // plan.n, plan.seed + k
        with tqdm(total=steps, desc=f"image {k + 1}/{len(outputs)}", unit="step") as bar:
            image = pipe.generate(
                text.select([p]), width=width, height=height, steps=steps, cfg=guidance, sampler=args.sampler,
                seed=seed, cfg_semantics=args.cfg_semantics, tile_vae=plan.tile, tile_size=plan.tile_size,
                check_memory=False, callback=lambda *_: bar.update(1),
            )[0]  # fmt: skip
        parameters = format_parameters(text.prompts[p], text.negative, {**settings, "Seed": seed})
        print(save_png(image, path, parameters, overwrite=args.force), flush=True)
