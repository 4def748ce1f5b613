"""Deepen a trained transformer without changing what it computes: new blocks that start as the identity.

A PixArt-Σ block adds three residual branches to its input (self-attention, cross-attention, MLP), each ending
in a linear projection. A block whose three output projections are zero adds nothing, so inserting such blocks
between the trained ones leaves the model's output exactly as it was, while their other weights (fresh, as the
model's own init draws them) give the gradients something to grow from: the first step already moves the zeroed
projections, as the input to each is not zero. This is how the demo model gets more capacity without training
the smaller one's 10+ hours of CPU again. No library does it for this architecture, hence by hand.

    python -m pixart.demo.grow runs/demo/dit-draw-hires/final.safetensors runs/demo/grown-12.safetensors \\
        --insert-after 1,3,5,7

`--insert-after` names old block indices; one new block goes after each. A new block inside the KV-compressed
run of blocks (its neighbour before it is compressed) is compressed too, its conv starting as an average, as
`enable_kv_compression` starts one.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# The three linear layers that end a block's residual branches: zero, and the block is the identity.
OUTPUT_PROJECTIONS = ("attn.proj", "cross_attn.proj", "mlp.fc2")


def layout(depth: int, insert_after: list[int]) -> list[int | None]:
    """The new block order: each entry an old block's index, or None for a new block."""
    bad = [i for i in insert_after if not 0 <= i < depth]
    if bad:
        raise ValueError(f"--insert-after {bad} out of range: blocks are 0..{depth - 1}")
    if len(set(insert_after)) != len(insert_after):
        raise ValueError(f"--insert-after {insert_after} has duplicates")
    order: list[int | None] = []
    for i in range(depth):
        order.append(i)
        if i in insert_after:
            order.append(None)
    return order


def grow(model: torch.nn.Module, insert_after: list[int], seed: int = 0) -> torch.nn.Module:
    """A deeper copy of `model` (a PixArtSigma) whose output is the same: identity blocks after `insert_after`."""
    from pixart.model import PixArtSigma

    cfg = model.cfg
    order = layout(cfg.depth, insert_after)
    compressed = set(cfg.kv_compress_layers)
    kv_layers = []
    for new_i, old_i in enumerate(order):
        before = order[new_i - 1] if new_i else None
        if (old_i is not None and old_i in compressed) or (old_i is None and before in compressed):
            kv_layers.append(new_i)
    new_cfg = cfg.replace(depth=len(order), kv_compress_layers=tuple(kv_layers))
    with torch.random.fork_rng():  # the caller's random state stays as it was
        torch.manual_seed(seed)
        grown = PixArtSigma(new_cfg).to(next(model.parameters()).dtype)  # fresh init: the new blocks' weights
    old_sd = model.state_dict()
    new_sd = grown.state_dict()
    for key in new_sd:
        if not key.startswith("blocks."):
            new_sd[key] = old_sd[key].clone()
    for new_i, old_i in enumerate(order):
        prefix = f"blocks.{new_i}."
        if old_i is None:
            for name in OUTPUT_PROJECTIONS:
                new_sd[f"{prefix}{name}.weight"].zero_()
                new_sd[f"{prefix}{name}.bias"].zero_()
            continue
        for key, value in old_sd.items():
            if key.startswith(f"blocks.{old_i}."):
                new_sd[prefix + key[len(f"blocks.{old_i}.") :]] = value.clone()
    grown.load_state_dict(new_sd, strict=True)
    logger.info(
        "grew %d -> %d blocks (%.1fM -> %.1fM parameters); new blocks at %s; KV compression on %s",
        cfg.depth,
        new_cfg.depth,
        model.num_parameters() / 1e6,
        grown.num_parameters() / 1e6,
        [i for i, o in enumerate(order) if o is None],
        list(kv_layers),
    )
    return grown.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixart.demo.grow", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="transformer checkpoint (any format load_transformer reads)")
    parser.add_argument("dst", help="output .safetensors (weights + config)")
    parser.add_argument("--insert-after", required=True, help="comma-separated old block indices, e.g. 1,3,5,7")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new blocks' init (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from pixart.checkpoint import load_transformer, save_transformer

    try:
        after = [int(v) for v in args.insert_after.split(",")]
    except ValueError:
        parser.error(f"bad --insert-after {args.insert_after!r}: expected comma-separated integers")
    model = load_transformer(args.src, dtype=torch.float32)
    try:
        grown = grow(model, after, args.seed)
    except ValueError as e:
        parser.error(str(e))
    save_transformer(grown, Path(args.dst))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
