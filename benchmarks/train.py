"""Training-step speed and memory: ours vs diffusers' PixArtTransformer2DModel, same weights, loss and optimizer.

One step = forward, the IDDPM hybrid loss (pixart.diffusion.losses, for both), backward, AdamW step, on a
full-width (1152) model of `--depth` blocks, fp32. Measured with and without gradient checkpointing, and our
model with KV compression (conv 2x, every block) at 4x the base token count. Each number comes from a fresh
subprocess: images/s from whole steps (best of `--steps`, after a warm-up step); activation memory, in another
process, as the peak over forward + loss + backward of what they add on top of weights, gradients, optimizer
state and inputs (RSS sampled every ms with glibc returning freed blocks at once, see _measure.EXACT_RSS_ENV;
`max_memory_allocated` on CUDA). The optimizer step is left out of the memory figure: AdamW's temporaries are
parameter-sized and the same with or without checkpointing. Ratios > 1 in images/s mean ours is faster.

    python benchmarks/train.py                   # 512² (1,024 tokens), KV at 1024² (4,096 tokens)
    python benchmarks/train.py --size 256 --depth 1 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
from _measure import EXACT_RSS_ENV, RssSampler, time_and_peak
from transformer import build

from pixart.diffusion.losses import GaussianDiffusion


def measure(
    kind: str, size: int, depth: int, batch: int, steps: int, checkpointing: bool, device: str, mode: str
) -> dict:
    model = build("ours-kv" if kind == "ours-kv" else kind, depth).to(device).train()
    if checkpointing:
        if kind == "diffusers":
            model.enable_gradient_checkpointing()
        else:
            model.set_gradient_checkpointing(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    diffusion = GaussianDiffusion.linear()
    gen = torch.Generator().manual_seed(0)
    latent = size // 8
    x0 = torch.randn(batch, 4, latent, latent, generator=gen).to(device)
    noise = torch.randn(x0.shape, generator=gen).to(device)
    t = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    caption = torch.randn(batch, 300, 4096, generator=gen).to(device)
    mask = torch.ones(batch, 300, dtype=torch.long, device=device)
    mask[:, 120:] = 0
    xt = diffusion.q_sample(x0, t, noise)

    def forward_backward():
        if kind == "diffusers":
            out = model(
                xt,
                encoder_hidden_states=caption,
                encoder_attention_mask=mask,
                timestep=t,
                added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                return_dict=False,
            )[0]
        else:
            out = model(xt, t, caption, mask, drop_caption=torch.zeros(batch, dtype=torch.bool, device=device))
        diffusion.training_losses(out, x0, xt, noise, t)["loss"].mean().backward()

    def step():
        forward_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated: part of the baseline, not the peak

    if mode == "time":
        seconds, _ = time_and_peak(step, steps, device)  # the warm-up also allocates the optimizer state
        return {"images_per_s": batch / seconds}
    step()  # warm-up: optimizer state and gradients exist from here on
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward_backward()
        torch.cuda.synchronize()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - base}
    base = RssSampler.current()
    with RssSampler() as sampler:
        forward_backward()
    return {"peak_bytes": sampler.peak - base}


def run_isolated(kind: str, size: int, checkpointing: bool, args) -> dict:
    """images/s and activation bytes of one configuration, each from its own fresh process."""
    result = {}
    for mode, env in (("time", {}), ("memory", EXACT_RSS_ENV)):
        result.update(run_child(kind, size, checkpointing, args, mode, env))
    return result


def run_child(kind: str, size: int, checkpointing: bool, args, mode: str, env: dict) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--_child",
        kind,
        "--size",
        str(size),
        "--depth",
        str(args.depth),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
    ]
    if checkpointing:
        cmd.append("--_checkpointing")
    cmd += ["--_mode", mode]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="base square image size in pixels")
    parser.add_argument("--depth", type=int, default=2, help="number of transformer blocks")
    parser.add_argument("--batch", type=int, default=2, help="batch size")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement (best is kept)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    parser.add_argument("--_checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_mode", default="time", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        result = measure(
            args._child, args.size, args.depth, args.batch, args.steps, args._checkpointing, args.device, args._mode
        )
        print(json.dumps(result))
        return

    mib = 2**20
    print(
        f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, depth {args.depth}, "
        f"batch {args.batch}, fp32, AdamW, IDDPM loss\n"
    )
    print("| run | image | tokens | images/s | activation MiB | vs diffusers images/s | vs diffusers memory |")
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for checkpointing in (False, True):
        for kind in ("ours", "diffusers"):
            rows[kind, checkpointing] = run_isolated(kind, args.size, checkpointing, args)
        for kind in ("ours", "diffusers"):
            r, ref = rows[kind, checkpointing], rows["diffusers", checkpointing]
            label = f"{kind}{' + checkpointing' if checkpointing else ''}"
            print(
                f"| {label} | {args.size}² | {(args.size // 16) ** 2:,} | {r['images_per_s']:.3f} | "
                f"{r['peak_bytes'] / mib:.0f} | {r['images_per_s'] / ref['images_per_s']:.2f} | "
                f"{r['peak_bytes'] / ref['peak_bytes']:.2f} |",
                flush=True,
            )
    big = args.size * 2  # 4x the tokens
    kv = run_isolated("ours-kv", big, False, args)
    plain = run_isolated("ours", big, False, args)
    for label, r in (("ours", plain), ("ours + KV compression", kv)):
        print(
            f"| {label} | {big}² | {(big // 16) ** 2:,} | {r['images_per_s']:.3f} | {r['peak_bytes'] / mib:.0f} | | |",
            flush=True,
        )
    cut = rows["ours", False]["peak_bytes"] / rows["ours", True]["peak_bytes"]
    print(
        f"\ngradient checkpointing cuts our peak activation memory by {cut:.2f}x; "
        f"KV compression at {big}² runs at {kv['images_per_s'] / plain['images_per_s']:.2f}x the images/s "
        f"with {kv['peak_bytes'] / plain['peak_bytes']:.2f}x the memory"
    )


if __name__ == "__main__":
    main()
