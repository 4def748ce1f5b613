"""Transformer forward speed and memory: ours vs diffusers' PixArtTransformer2DModel on identical weights.

Full-width (1152 wide, 16 heads x 72, 4096-d captions) model of `--depth` blocks, batch 2, fp32, CPU by
default. For each image size it times one forward pass of ours, diffusers', and ours with KV compression on in
every block (conv, 2x), and measures their peak memory. Prints a markdown table of ratios; ratios < 1 mean ours
is faster / smaller.

Times: one process holds the three models and runs their forwards round-robin (a warm-up each, then
`--repeats` rounds, best kept), so a shared machine's drifting speed hits all three alike; measured one after
another in separate processes, the same ratio moved by +-10% between runs here. Peak memory is what the
forward pass adds on top of the weights and inputs, each model in a fresh subprocess: on CPU the highest
resident set size seen by a 1 ms sampling thread minus the RSS just before (with glibc returning freed
blocks at once, see _measure.EXACT_RSS_ENV); on CUDA `max_memory_allocated` minus the allocation before.

    python benchmarks/transformer.py                       # 1024² and 2048² images (4,096 and 16,384 tokens)
    python benchmarks/transformer.py --sizes 512 --depth 1 # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
from _measure import EXACT_RSS_ENV, round_robin, time_and_peak

from pixart.config import ModelConfig
from pixart.convert import config_to_diffusers, ours_to_diffusers
from pixart.model import PixArtSigma


def build(kind: str, depth: int, seed: int = 0):
    """Our model (`ours`, `ours-kv`) or diffusers' (`diffusers`), all holding the same random weights."""
    cfg = ModelConfig(depth=depth, sample_size=128, pe_interpolation=2.0)
    torch.manual_seed(seed)
    model = PixArtSigma(cfg)
    with torch.no_grad():  # non-zero output layers, so the whole network is exercised
        for p in model.parameters():
            p.normal_(0, 0.02)
    if kind == "ours-kv":
        model.enable_kv_compression(list(range(depth)), factor=2, sampling="conv")
    if kind != "diffusers":
        return model.eval()
    from diffusers import PixArtTransformer2DModel

    ref = PixArtTransformer2DModel(**{k: v for k, v in config_to_diffusers(cfg).items() if not k.startswith("_")})
    sd = ours_to_diffusers(model.state_dict(), cfg)
    sd.pop("caption_projection.y_embedding")
    ref.load_state_dict(sd, strict=True)
    return ref.eval()


def inputs(size: int, batch: int, device: str):
    gen = torch.Generator().manual_seed(1)
    latent = size // 8
    x = torch.randn(batch, 4, latent, latent, generator=gen).to(device)
    t = torch.tensor([500.0] * batch, device=device)
    caption = torch.randn(batch, 300, 4096, generator=gen).to(device)
    mask = torch.ones(batch, 300, dtype=torch.long, device=device)
    mask[:, 120:] = 0
    return x, t, caption, mask


def forward_fn(kind: str, model, x, t, caption, mask):
    def forward():
        if kind == "diffusers":
            return model(
                x,
                encoder_hidden_states=caption,
                encoder_attention_mask=mask,
                timestep=t,
                added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                return_dict=False,
            )[0]
        return model(x, t, caption, mask)

    return forward


def measure_memory(kind: str, size: int, depth: int, batch: int, device: str) -> dict:
    """Run in a fresh process: peak memory of one forward of `kind` at `size` px images (after a warm-up)."""
    model = build(kind, depth).to(device)
    with torch.inference_mode():
        _, peak = time_and_peak(forward_fn(kind, model, *inputs(size, batch, device)), 1, device)
    return {"forward_peak_bytes": peak}


def measure_times(size: int, depth: int, batch: int, repeats: int, device: str) -> dict:
    """Run in a fresh process: best forward seconds of each kind, the kinds interleaved round-robin."""
    args = inputs(size, batch, device)
    forwards = {kind: forward_fn(kind, build(kind, depth).to(device), *args) for kind in KINDS}
    with torch.inference_mode():
        return round_robin(forwards, repeats, device)


KINDS = ("ours", "diffusers", "ours-kv")


def run_isolated(kind: str, size: int, args) -> dict:
    """`kind` "times" -> {kind: seconds}; a model kind -> its forward's peak memory; each in a fresh process."""
    cmd = [
        sys.executable,
        __file__,
        "--_child",
        kind,
        "--sizes",
        str(size),
        "--depth",
        str(args.depth),
        "--batch",
        str(args.batch),
        "--repeats",
        str(args.repeats),
        "--device",
        args.device,
    ]
    env = {**os.environ, **(EXACT_RSS_ENV if kind != "times" else {})}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1024,2048", help="comma-separated square image sizes in pixels")
    parser.add_argument("--depth", type=int, default=2, help="number of transformer blocks")
    parser.add_argument("--batch", type=int, default=2, help="batch size")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds (best is kept)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args._child == "times":
        print(json.dumps(measure_times(sizes[0], args.depth, args.batch, args.repeats, args.device)))
        return
    if args._child:
        print(json.dumps(measure_memory(args._child, sizes[0], args.depth, args.batch, args.device)))
        return

    print(
        f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, depth {args.depth}, "
        f"batch {args.batch}, fp32\n"
    )
    print(
        "| image | tokens | ours s | diffusers s | ours/diffusers time | ours MiB | diffusers MiB | "
        "ours/diffusers mem | KV on s | KV on/off time | KV on MiB | KV on/off mem |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        seconds = run_isolated("times", size, args)
        r = {kind: {"seconds": seconds[kind]} for kind in KINDS}
        mem = {kind: run_isolated(kind, size, args)["forward_peak_bytes"] for kind in KINDS}
        tokens = (size // 16) ** 2
        mib = 2**20
        print(
            f"| {size}² | {tokens:,} | {r['ours']['seconds']:.2f} | {r['diffusers']['seconds']:.2f} | "
            f"{r['ours']['seconds'] / r['diffusers']['seconds']:.2f} | {mem['ours'] / mib:.0f} | "
            f"{mem['diffusers'] / mib:.0f} | {mem['ours'] / mem['diffusers']:.2f} | "
            f"{r['ours-kv']['seconds']:.2f} | {r['ours-kv']['seconds'] / r['ours']['seconds']:.2f} | "
            f"{mem['ours-kv'] / mib:.0f} | {mem['ours-kv'] / mem['ours']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
