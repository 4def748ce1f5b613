"""Encode a dataset once into a feature cache for training: T5 features of every caption (short and long) and
the VAE latent mean/std of every image at its aspect-ratio bucket size, in safetensors shards. Resumable (only
missing shards are encoded), idempotent (a second run writes nothing) and safe to interrupt at any moment."""

from __future__ import annotations

import argparse

DTYPES = ("auto", "float32", "float16", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data", metavar="DATA", help="image folder with same-name .txt captions, or a .jsonl/.csv/.json manifest"
    )
    parser.add_argument("--cache", required=True, metavar="DIR", help="cache folder to create or complete")
    parser.add_argument(
        "--text-encoder", required=True, metavar="DIR", help="T5 folder, or a pipeline folder with text_encoder/"
    )
    parser.add_argument("--vae", required=True, metavar="DIR", help="AutoencoderKL folder, or a pipeline with vae/")
    parser.add_argument(
        "--resolution", type=int, default=1024, help="base resolution of the aspect-ratio buckets (256 ... 2880)"
    )
    parser.add_argument(
        "--fixed-size", default=None, metavar="HxW", help="one bucket of this size instead of aspect-ratio buckets"
    )
    parser.add_argument("--max-tokens", type=int, default=300, help="T5 tokens per caption (longer ones are cut)")
    parser.add_argument("--batch-size", type=int, default=8, help="images or captions per encoder call")
    parser.add_argument("--shard-size", type=int, default=512, help="samples per shard file")
    parser.add_argument("--workers", type=int, default=4, help="threads decoding images")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="auto", help="encoder dtype; auto = bfloat16 on GPU, float32 on CPU"
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from pixart.data.buckets import bins_for, fixed_bins, parse_size
    from pixart.data.cache import T5AndVAE, prepare_cache
    from pixart.data.dataset import load_index

    if args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.dtype == "auto":
        dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    bins = fixed_bins(*parse_size(args.fixed_size)) if args.fixed_size else bins_for(args.resolution)
    index = load_index(args.data)  # fails fast on a wrong path, before any model loads
    encoders = T5AndVAE(args.text_encoder, args.vae, max_tokens=args.max_tokens, device=device, dtype=dtype)
    summary = prepare_cache(
        index,
        args.cache,
        encoders,
        bins=bins,
        max_tokens=args.max_tokens,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=lambda shards: tqdm(shards, desc="shards", unit="shard", disable=None),
    )
    print(f"feature cache {summary}")
    return 0
