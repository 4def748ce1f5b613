"""Training-step speed and memory: ours vs diffusers' PixArtTransformer2DModel, same weights, loss and optimizer.

One step = forward, the IDDPM hybrid loss (pixart.diffusion.losses, for both), backward, AdamW step, on a
full-width (1152) model of `--depth` blocks, fp32. Measured with and without gradient checkpointing, and our
model with KV compression (conv 2x, every block) at 4x the base token count. images/s from whole steps: one
process holds every variant being compared and steps them round-robin (a warm-up step each, then `--steps`
rounds, best kept), so a shared machine's drifting speed hits all alike. Activation memory, each variant in a
fresh process, is the peak over forward + loss + backward of what they add on top of weights, gradients, optimizer
state and inputs (RSS sampled every ms with glibc returning freed blocks at once, see _measure.EXACT_RSS_ENV;
`max_memory_allocated` on CUDA). The optimizer step is left out of the memory figure: AdamW's temporaries are
parameter-sized and the same with or without checkpointing. Ratios > 1 in images/s mean ours is faster.

Both get the same batch: captions padded to T5's 300 tokens, 120 of them real. Our step then drops the columns
that every caption pads, as `pixart train` does (`trim_caption_padding`; the output is the same, see
tests/test_model.py), while diffusers' model projects and attends over all 300. `--no-trim` times our model on
the padded batch instead, which compares the two models' forward/backward alone.

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
from _measure import EXACT_RSS_ENV, RssSampler, round_robin
from transformer import build

from pixart.diffusion.losses import GaussianDiffusion
from pixart.model.attention import trim_caption_padding


def make_step(kind: str, size: int, depth: int, batch: int, checkpointing: bool, device: str, trim: bool = True):
    """(step, forward_backward) closures of one variant: a full training step, and its forward + loss + backward."""
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
            cap, cap_mask = trim_caption_padding(caption, mask) if trim else (caption, mask)  # as pixart train
            out = model(xt, t, cap, cap_mask, drop_caption=torch.zeros(batch, dtype=torch.bool, device=device))
        diffusion.training_losses(out, x0, xt, noise, t)["loss"].mean().backward()

    def step():
        forward_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated: part of the baseline, not the peak

    return step, forward_backward


def measure_times(
    variants: list[tuple[str, bool]], size: int, depth: int, batch: int, steps: int, device: str, trim: bool
):
    """images/s of each (kind, checkpointing) variant, stepped round-robin in this process."""
    fns = {v: make_step(*v[:1], size, depth, batch, v[1], device, trim)[0] for v in variants}
    best = round_robin(fns, steps, device)  # the warm-up round also allocates the optimizer state
    return [{"kind": v[0], "checkpointing": v[1], "images_per_s": batch / best[v]} for v in variants]


def measure_memory(kind: str, size: int, depth: int, batch: int, checkpointing: bool, device: str, trim: bool) -> dict:
    """Activation bytes of one variant (run in a fresh process)."""
    step, forward_backward = make_step(kind, size, depth, batch, checkpointing, device, trim)
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


def run_child(args, size: int, *child: str, env: dict | None = None):
    cmd = [sys.executable, __file__, "--_child", *child, "--size", str(size), "--depth", str(args.depth)]
    cmd += ["--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device]
    cmd += ["--no-trim"] if args.no_trim else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_all(args, size: int, variants: list[tuple[str, bool]]) -> dict:
    """{(kind, checkpointing): {"images_per_s", "peak_bytes"}}: one interleaved timing process, then one memory
    process per variant."""
    spec = ",".join(f"{kind}:{int(ckpt)}" for kind, ckpt in variants)
    rows = {(r["kind"], r["checkpointing"]): r for r in run_child(args, size, "times", spec)}
    for kind, ckpt in variants:
        rows[kind, ckpt].update(run_child(args, size, "memory", f"{kind}:{int(ckpt)}", env=EXACT_RSS_ENV))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="base square image size in pixels")
    parser.add_argument("--depth", type=int, default=4, help="number of transformer blocks")
    parser.add_argument("--batch", type=int, default=2, help="batch size")
    parser.add_argument("--steps", type=int, default=2, help="timed rounds (best is kept)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--no-trim", action="store_true", help="our step without dropping caption padding")
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        mode, spec = args._child
        variants = [(kind, bool(int(ckpt))) for kind, ckpt in (v.split(":") for v in spec.split(","))]
        if mode == "times":
            trim = not args.no_trim
            rows = measure_times(variants, args.size, args.depth, args.batch, args.steps, args.device, trim)
            print(json.dumps(rows))
        else:
            print(json.dumps(measure_memory(*variants[0][:1], args.size, args.depth, args.batch, variants[0][1],
                                            args.device, not args.no_trim)))  # fmt: skip
        return

    mib = 2**20
    print(
        f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, depth {args.depth}, "
        f"batch {args.batch}, fp32, AdamW, IDDPM loss, best of {args.steps} rounds, "
        f"caption padding {'kept' if args.no_trim else 'trimmed'} in our step\n"
    )
    print("| run | image | tokens | images/s | activation MiB | vs diffusers images/s | vs diffusers memory |")
    print("|---|---|---|---|---|---|---|")
    rows = measure_all(args, args.size, [(k, c) for c in (False, True) for k in ("ours", "diffusers")])
    for checkpointing in (False, True):
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
    big_rows = measure_all(args, big, [("ours", False), ("ours-kv", False)])
    plain, kv = big_rows["ours", False], big_rows["ours-kv", False]
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
