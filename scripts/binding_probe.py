"""Experiment: does a demo T5 put into each emoji name's features what its phrase says about it?

    python scripts/binding_probe.py                                   # the three demo T5s that exist locally
    python scripts/binding_probe.py --export runs/demo/export-v2      # one of them

The DiT reads a caption through cross-attention, which sees the caption's tokens as a set: it has no idea of their
order. So in "a panda above a large rainbow" it can only learn which object is the upper one, and which is the
large one, if the name's own features say so. This script asks that of a text encoder with linear probes.

The captions: `--pairs` (3,000) pair prompts in the eval's short form, "a A REL a B on a C background", A and B two
different emoji of the world's vocabulary, REL "above" or "next to", and either A, B or neither "large" (a third
each), all drawn from `--seed`. For each name, its features are the mean of the encoder's outputs over its word
pieces; standardised, 80% of the names train a logistic regression (Adam, 500 steps, a little L2) and the other 20%
score it, against always answering the majority class. Four questions:
- role: is this name the first object (above / to the left) or the second?
- large: is this object the large one?
- emoji: which of the N emoji is it (chance 1/N)?
- relation: is the caption's relation "above" (rather than "next to")?
and two of the relation's own features (the mean over "above" / "next to"'s pieces), which the DiT could read the
pair from instead: which emoji comes before it (first-emoji), and which after it (second-emoji)? Last, how far the
first name's features move (relative to their norm) when the caption names the pair the other way round ("a B
above a A"): near 0 for an encoder blind to word order.

Not a test: a measurement for docs/demo-model.md. Runs in about a minute a text encoder on one CPU thread.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_EXPORTS = ("runs/demo/export", "runs/demo/export-v2", "runs/demo/export-v3", "runs/demo/export-v4")


def pair_caption(a: str, b: str, relation: str, large: int | None, colour: str) -> dict:
    """One pair caption and where its two names' tokens are found later: name strings, role, sizes."""
    from pixart.data.emoji_captions import _article

    phrases = [("large " if large == i else "") + name for i, name in enumerate((a, b))]
    first = f"{_article(phrases[0])} {phrases[0]}"
    both = f"{first} {relation} {_article(phrases[1])} {phrases[1]}"
    return {
        "caption": f"{both} on {_article(colour)} {colour} background",
        "prefixes": (first, both),  # each name ends where its prefix does
        "relation_prefix": f"{first} {relation}",
        "names": (a, b),
        "large": large,
        "relation": relation,
        "colour": colour,
    }


def pair_captions(n: int, seed: int) -> list[dict]:
    """n pair captions drawn from `seed` (see the module's docstring)."""
    from pixart.data.emoji_vocab import PALETTE, VOCABULARY

    rng = random.Random(seed)
    names, colours = [e.name for e in VOCABULARY], list(PALETTE)
    rows = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        relation, large, colour = rng.choice(["above", "next to"]), rng.choice([None, 0, 1]), rng.choice(colours)
        rows.append(pair_caption(a, b, relation, large, colour))
    return rows


def swapped(row: dict) -> dict:
    """The same pair the other way round: "a B REL a A", the large one still the same object."""
    large = None if row["large"] is None else 1 - row["large"]
    return pair_caption(row["names"][1], row["names"][0], row["relation"], large, row["colour"])


def name_features(export: Path, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(2 n, D): the mean encoder output over each name's word pieces, A then B of every caption; (n, D): the same
    over each caption's relation words."""
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(export / "tokenizer")
    encoder = T5EncoderModel.from_pretrained(export / "text_encoder", dtype=torch.float32).eval()

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    out, relations = [], []
    with torch.no_grad():
        for start in range(0, len(rows), 200):
            chunk = rows[start : start + 200]
            batch = tokenizer([r["caption"] for r in chunk], padding=True, return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state  # (b, S, D)
            for r, h in zip(chunk, hidden, strict=True):
                for prefix, name in zip(r["prefixes"], r["names"], strict=True):
                    end = count(prefix)
                    out.append(h[end - count(name) : end].mean(0))
                relations.append(h[count(r["prefixes"][0]) : count(r["relation_prefix"])].mean(0))
    return torch.stack(out), torch.stack(relations)


def probe(x: torch.Tensor, y: torch.Tensor, classes: int) -> tuple[float, float]:
    """(held-out accuracy, majority-class accuracy) of a logistic regression on the first 80% of (x, y)."""
    cut = int(0.8 * len(y))
    torch.manual_seed(0)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(500):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[:cut] @ w + b, y[:cut]) + 1e-3 * w.pow(2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = ((x[cut:] @ w + b).argmax(1) == y[cut:]).float().mean().item()
    majority = torch.bincount(y[cut:], minlength=classes).max().item() / (len(y) - cut)
    return acc, majority


def report(export: Path, rows: list[dict]) -> list[str]:
    from pixart.data.emoji_vocab import VOCABULARY

    names = [e.name for e in VOCABULARY]
    x, rel = name_features(export, rows)
    x, rel = ((f - f.mean(0)) / (f.std(0) + 1e-6) for f in (x, rel))
    labels = {"role": [], "large": [], "emoji": [], "relation": []}
    for r in rows:
        for i in (0, 1):
            labels["role"].append(1 - i)
            labels["large"].append(int(r["large"] == i))
            labels["emoji"].append(names.index(r["names"][i]))
            labels["relation"].append(int(r["relation"] == "above"))
    lines, shown = [], export.relative_to(REPO) if export.is_relative_to(REPO) else export
    for question, y in labels.items():
        classes = len(names) if question == "emoji" else 2
        acc, majority = probe(x, torch.tensor(y), classes)
        lines.append(f"| {shown} | {question} | {acc:.3f} | {majority:.3f} |")
    for i, question in enumerate(("first-emoji", "second-emoji")):
        acc, majority = probe(rel, torch.tensor([names.index(r["names"][i]) for r in rows]), len(names))
        lines.append(f"| {shown} | {question} (from the relation's features) | {acc:.3f} | {majority:.3f} |")
    # Order: how far a name's features move when the pair is written the other way round (raw, not standardised).
    raw, _ = name_features(export, rows)
    turned, _ = name_features(export, [swapped(r) for r in rows])
    moved = (raw[0::2] - turned[1::2]).norm(dim=1) / raw[0::2].norm(dim=1)  # A first, then A second
    lines.append(f"| {shown} | order: A's features moved by writing B first (relative) | {moved.mean():.3f} | |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", action="append", help="text encoder folder(s) with text_encoder/ and tokenizer/")
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    exports = [Path(e) for e in (args.export or DEFAULT_EXPORTS) if (REPO / e / "text_encoder").is_dir()]
    rows = pair_captions(args.pairs, args.seed)
    print("| text encoder | question | held-out accuracy | majority class |")
    print("|---|---|---:|---:|")
    for export in exports:
        print("\n".join(report(REPO / export if not export.is_absolute() else export, rows)), flush=True)


if __name__ == "__main__":
    main()
