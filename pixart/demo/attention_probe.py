"""Where a DiT's cross-attention looks: inside each emoji's box, how much of it goes to that emoji's own name.

The role probe (`pixart.demo.role_probe`) says whether a model's prediction depends on which name comes first; this
probe says whether that dependence goes through the attention weights. For the role probe's canonical two-emoji
scenes (the same world seed), noised to one timestep, it runs the model once with each scene's own caption and reads
every block's cross-attention probabilities (softmax over the caption's tokens, per head). Inside the token cells of
each object's box it sums the probability on the tokens of that object's own name ("own") and on the tokens of the
other object's name ("other"), and averages over the box's cells, the two objects and the scenes. A head that binds
names to places puts more on the own name than on the other; one that reads the names as a set puts the same on
both, so own - other is 0 however much it looks at names.

    python -m pixart.demo.attention_probe runs/demo/dit-bind-canon/final.safetensors -n 32 -t 700

The attention is read with forward hooks on the blocks' `cross_attn`, removed before the function returns; the
probabilities are recomputed from the layer's own q and k projections, exactly as its forward computes them.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from pixart.demo.role_probe import box_cells

logger = logging.getLogger(__name__)


def name_span(tokens: Sequence[str], name_tokens: Sequence[str]) -> list[int]:
    """Indices of the first occurrence of `name_tokens` in `tokens`; ValueError when it is not there."""
    n = len(name_tokens)
    for i in range(len(tokens) - n + 1):
        if n and list(tokens[i : i + n]) == list(name_tokens):
            return list(range(i, i + n))
    raise ValueError(f"the name tokens {list(name_tokens)} are not in the caption tokens {list(tokens)}")


@contextlib.contextmanager
def cross_attention_recorder(model: torch.nn.Module) -> Iterator[list[Tensor]]:
    """Within the block, every forward of `model` appends each block's cross-attention logits (B, H, N, L), the
    scaled q·k before the softmax, to the yielded list in block order; padded caption tokens get -inf, so
    `.softmax(-1)` gives the attention probabilities."""
    maps: list[Tensor] = []

    def record(module, args, _output) -> None:
        x, cond, mask = args
        q = rearrange(module.q_linear(x), "b n (h d) -> b h n d", h=module.num_heads)  # (B, H, N, d)
        w, b = module.kv_linear.weight.chunk(2)[0], module.kv_linear.bias.chunk(2)[0]
        k = rearrange(torch.nn.functional.linear(cond, w, b), "b l (h d) -> b h l d", h=module.num_heads)  # (B,H,L,d)
        logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5  # (B, H, N, L)
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        maps.append(logits)

    handles = [block.cross_attn.register_forward_hook(record) for block in model.blocks]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()


def name_logit_gaps(logits: Sequence[Tensor], spans, cells) -> Tensor:
    """(blocks, heads, 2): how strongly each head prefers one name to the other, and how much that preference
    depends on the box. Per scene, g_j = mean over box j's cells of logsumexp(logits on name 0's tokens) -
    logsumexp(on name 1's); column 0 is mean |g_0 + g_1| / 2 (the preference both boxes share: a head choosing
    by identity), column 1 is mean (g_0 - g_1) (how much more box 0 prefers name 0 than box 1 does: a head
    binding names to places has it large and positive). Saturated heads, where column 0 is in the tens or more,
    put all their weight on one token and pass almost no gradient back through the softmax."""
    out = torch.zeros(len(logits), logits[0].shape[1], 2)
    for li, lg in enumerate(logits):
        for b in range(lg.shape[0]):
            g = [
                lg[b][:, cells[b][j]][..., spans[b][0]].logsumexp(-1).mean(-1)
                - lg[b][:, cells[b][j]][..., spans[b][1]].logsumexp(-1).mean(-1)
                for j in (0, 1)
            ]  # 2 x (H,)
            out[li, :, 0] += (g[0] + g[1]).abs() / 2
            out[li, :, 1] += g[0] - g[1]
    return out / logits[0].shape[0]


def own_and_other(maps: Sequence[Tensor], spans: Sequence[Sequence[list[int]]], cells: Sequence[Sequence[Tensor]]):
    """(blocks, heads, 2) mean attention mass on the own and on the other name inside each box.

    maps: per block (B, H, N, L); spans[b][j]: token indices of scene b's object j's name (two objects);
    cells[b][j]: (N,) bool, object j's box cells."""
    out = torch.zeros(len(maps), maps[0].shape[1], 2)
    for li, att in enumerate(maps):
        for b in range(att.shape[0]):
            for j in (0, 1):
                inside = att[b][:, cells[b][j]]  # (H, Nbox, L)
                out[li, :, 0] += inside[..., spans[b][j]].sum(-1).mean(-1)
                out[li, :, 1] += inside[..., spans[b][1 - j]].sum(-1).mean(-1)
    return out / (2 * maps[0].shape[0])


@torch.no_grad()
def name_attention(
    weights: str | Path, n: int = 32, t: int = 700, seed: int | None = None, side: int | None = None
) -> list[dict]:
    """Rows {"block", "head", "own", "other", "bind", "name_gap", "box_dependence"} (`name_logit_gaps`) for one
    weights file, on n role-probe scenes at timestep t (resized to side px, as the role probe's --side)."""
    from pixart.checkpoint import load_transformer
    from pixart.data.emoji_captions import short_caption
    from pixart.demo.role_probe import WORLD_SEED, encode_probe_set, role_scenes, run_encoders, weights_of
    from pixart.diffusion.losses import GaussianDiffusion
    from pixart.text import load_tokenizer, resolve_text_folders

    ((_, path, run),) = weights_of(weights)
    model = load_transformer(path, dtype=torch.float32).eval()
    text_encoder, vae = run_encoders(run)
    scenes = role_scenes(n, WORLD_SEED if seed is None else seed)
    probe = encode_probe_set(scenes, text_encoder, vae, model.cfg.max_tokens, side=side)
    tokenizer = load_tokenizer(resolve_text_folders(text_encoder)[0])
    x0 = probe["latent"]  # (B, C, h, w)
    grid = (x0.shape[-2] // model.cfg.patch_size, x0.shape[-1] // model.cfg.patch_size)
    cell_px = scenes[0].height // grid[0]
    spans, cells = [], []
    for s in scenes:
        tokens = tokenizer.tokenize(short_caption(s))
        spans.append([name_span(tokens, tokenizer.tokenize(o.name)) for o in s.objects])
        if max(spans[-1][1] + spans[-1][0]) >= model.cfg.max_tokens:
            raise ValueError(f"a name lies past the model's {model.cfg.max_tokens} caption tokens: {tokens}")
        cells.append([box_cells(o.box, grid, cell_px) for o in s.objects])
    diffusion = GaussianDiffusion.linear(1000)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(t)))
    steps = torch.full((len(x0),), int(t))
    caption, mask = probe["true"]
    with cross_attention_recorder(model) as logits:
        model(diffusion.q_sample(x0, steps, noise), steps, caption, mask)
    table = own_and_other([lg.softmax(dim=-1) for lg in logits], spans, cells)
    gaps = name_logit_gaps(logits, spans, cells)
    return [
        {
            "block": li,
            "head": h,
            "own": float(table[li, h, 0]),
            "other": float(table[li, h, 1]),
            "bind": float(table[li, h, 0] - table[li, h, 1]),
            "name_gap": float(gaps[li, h, 0]),
            "box_dependence": float(gaps[li, h, 1]),
        }
        for li in range(table.shape[0])
        for h in range(table.shape[1])
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixart.demo.attention_probe", description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="a DiT weights file of a `pixart train` run (its config.json names the T5)")
    parser.add_argument("-n", type=int, default=32, help="scenes (default 32)")
    parser.add_argument("-t", type=int, default=700, help="timestep (default 700)")
    parser.add_argument("--side", type=int, help="resize the 256 px scenes to SIDE px (128 for a 128 px stage)")
    parser.add_argument("--csv", help="write the rows to this CSV file")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error(f"-n {args.n}: give at least 2 scenes")
    if not 0 <= args.t < 1000:
        parser.error(f"-t {args.t}: the timestep must be in [0, 1000)")
    from pixart.demo.role_probe import side_error

    if error := side_error(args.side):
        parser.error(error)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rows = name_attention(args.weights, args.n, args.t, side=args.side)
    except (FileNotFoundError, KeyError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    heads = max(r["head"] for r in rows) + 1
    print(
        f"{args.weights}, t={args.t}, {args.n} scenes, per head: attention on the own / the other name inside each"
        " box [name logit gap | its box dependence]"
    )
    for li in range(len(rows) // heads):
        cells = [
            f"{r['own']:.3f}/{r['other']:.3f} [{r['name_gap']:.1f}|{r['box_dependence']:+.2f}]"
            for r in rows[li * heads : (li + 1) * heads]
        ]
        print(f"block {li}: " + "  ".join(cells))
    best = max(rows, key=lambda r: r["bind"])
    print(f"largest own - other: {best['bind']:+.3f} (block {best['block']}, head {best['head']})")
    if args.csv:
        with Path(args.csv).open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
