"""Convert a transformer checkpoint between the pixart (.safetensors + config), diffusers (folder) and official
(.pth) layouts, KV-compressed models included. The destination is written atomically and never overwritten
without --force."""

from __future__ import annotations

import argparse

from pixart.config import PRESETS

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    presets = ", ".join(PRESETS)
    parser.add_argument("src", help="checkpoint to read: .safetensors/.pth/.bin file, diffusers or pipeline folder")
    parser.add_argument("dst", help="where to write: .safetensors (pixart), a folder (diffusers), .pth (official)")
    parser.add_argument("--to", required=True, choices=("pixart", "diffusers", "official"), help="output layout")
    parser.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help=f"for a source without config: the model it is (sets pe_interpolation, sample_size); one of {presets}",
    )
    parser.add_argument(
        "--pe-interpolation",
        type=float,
        default=None,
        help="positional-embedding scale (image side / 512); overrides the source/preset",
    )
    parser.add_argument(
        "--sample-size",
        type=int,
        default=None,
        help="latent side of the native resolution (image side / 8); overrides the source/preset",
    )
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default=None,
        help="cast floating weights to this dtype; unset keeps the source's",
    )
    parser.add_argument(
        "--ema",
        action="store_true",
        help="official training checkpoints: convert 'state_dict_ema' instead of 'state_dict'",
    )
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")


def run(args: argparse.Namespace) -> int:
    import torch

    from pixart.checkpoint import convert_checkpoint

    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else None
    dst = convert_checkpoint(
        args.src,
        args.dst,
        args.to,
        overwrite=args.force,
        preset=args.preset,
        pe_interpolation=args.pe_interpolation,
        sample_size=args.sample_size,
        ema=args.ema,
        dtype=dtype,
    )
    print(f"wrote {args.to} checkpoint: {dst}")
    return 0
