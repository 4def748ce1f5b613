"""Where each emoji name sits in a caption's tokens, and where its object is in the scene: the targets of the demo
T5's layout loss (`pixart.demo.word_losses.layout_loss`).

The DiT reads a caption through cross-attention, which sees its tokens as a set. In "a panda above a large
rainbow" only the names' own features can tell it that the panda is the upper object and the rainbow the large
one, and no T5 trained on span corruption alone puts that there (`scripts/binding_probe.py`, docs/demo-model.md).
The layout loss asks it directly: every word piece of a name predicts, from its encoder output, the grid cell and
the size of its object in the scene the caption was written from, and its rank among the scene's objects from the
top and from the left (which of a pair is the upper or the left one, which the cell alone says only weakly). The
scene is known when the corpus is made, so the targets cost nothing; a caption that leaves the cell open ("a panda
above a rainbow") is answered best by the distribution of cells such captions have, which is what the DiT needs
the name to carry.

A kind with several instances ("two cats") gets the share of its instances in each cell and size as a soft target.
Every occurrence of a name is asked (the long caption names an object in several sentences).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import T5Tokenizer

from pixart.data.emoji import Scene, long_caption, sample_scene, scene_seed, short_caption
from pixart.data.emoji_vocab import BY_NAME, POSITIONS
from pixart.demo.tokenizer import PAD_ID

SIZES = ("small", "medium", "large")
RANKS = 3  # at most three objects a scene
TARGETS = {"cell": len(POSITIONS), "size": len(SIZES), "row": RANKS, "col": RANKS}  # what each name piece predicts


@dataclass(frozen=True)
class NameLayout:
    """One occurrence of a name in a caption: its pieces' token indices and its object's cell and size shares."""

    positions: tuple[int, ...]  # indices into the caption's token ids (no eos)
    cell: tuple[float, ...]  # len(POSITIONS): share of the kind's objects in each grid cell
    size: tuple[float, ...]  # len(SIZES): share of the kind's objects of each size
    row: tuple[float, ...]  # RANKS: share of the kind's objects that are the scene's 1st, 2nd, 3rd from the top
    col: tuple[float, ...]  # RANKS: the same from the left


def _word_ends(pieces: Sequence[str], end: int) -> bool:
    """A match ending before index `end` ends a word: the next piece starts a new one or is not a letter."""
    return end == len(pieces) or pieces[end].startswith("▁") or not pieces[end][:1].isalpha()


def name_layouts(
    tok: T5Tokenizer, ids: Sequence[int], scene: Scene, form_ids: dict[str, list[int]] | None = None
) -> list[NameLayout]:
    """Every occurrence in `ids` (a caption of `scene`, tokenised without eos) of one of the scene's names.

    Forms are searched longest first (plural before singular, "red apple" before "apple"), and a token belongs to
    at most one match, so a name inside another is not counted twice. `form_ids`: a cache of each form's token ids,
    shared across the captions of a corpus.
    """
    form_ids = {} if form_ids is None else form_ids
    pieces = tok.convert_ids_to_tokens(list(ids))
    by_y = sorted(range(len(scene.objects)), key=lambda i: (scene.objects[i].y, scene.objects[i].x))
    by_x = sorted(range(len(scene.objects)), key=lambda i: (scene.objects[i].x, scene.objects[i].y))
    forms = []
    for name in {o.name for o in scene.objects}:
        mine = [i for i, o in enumerate(scene.objects) if o.name == name]
        objs = [scene.objects[i] for i in mine]
        targets = (
            tuple(sum(o.position == p for o in objs) / len(objs) for p in POSITIONS),
            tuple(sum(o.size_word == s for o in objs) / len(objs) for s in SIZES),
            tuple(sum(by_y.index(i) == r for i in mine) / len(mine) for r in range(RANKS)),
            tuple(sum(by_x.index(i) == r for i in mine) / len(mine) for r in range(RANKS)),
        )
        entry = BY_NAME.get(name)
        for form in {name, entry.plural_name if entry else name + "s"}:
            if form not in form_ids:
                form_ids[form] = tok(form, add_special_tokens=False).input_ids
            forms.append((form_ids[form], targets))
    forms.sort(key=lambda f: -len(f[0]))
    taken = [False] * len(ids)
    out = []
    for form_ids, targets in forms:
        n = len(form_ids)
        for start in range(len(ids) - n + 1):
            span = range(start, start + n)
            if list(ids[start : start + n]) == form_ids and not any(taken[i] for i in span):
                if _word_ends(pieces, start + n):
                    out.append(NameLayout(tuple(span), *targets))
                    for i in span:
                        taken[i] = True
    return sorted(out, key=lambda x: x.positions)


def layout_corpus(
    tok: T5Tokenizer, seed: int, n_scenes: int, sizes: Sequence[tuple[int, int]]
) -> tuple[list[list[int]], list[list[NameLayout]]]:
    """The short and long captions of scenes 0..n_scenes-1 of dataset `seed` (the T5 corpus's order), tokenised
    without eos, and each one's name layouts."""
    encoded, layouts, form_ids = [], [], {}
    for i in range(n_scenes):
        scene = sample_scene(scene_seed(seed, i), *sizes[i % len(sizes)])
        for caption in (short_caption(scene), long_caption(scene)):
            ids = tok(caption).input_ids[:-1]
            encoded.append(ids)
            layouts.append(name_layouts(tok, ids, scene, form_ids))
    return encoded, layouts


def layout_batch(
    encoded: Sequence[Sequence[int]], layouts: Sequence[Sequence[NameLayout]], index: Sequence[int], max_length: int
) -> dict[str, torch.Tensor]:
    """Clean (uncorrupted) captions `index` padded, and one row per name piece within `max_length` tokens.

    Returns input_ids/attention_mask (B, S); rows (N, 2) = (caption, token); the targets cell (N, 9), size, row
    and col (N, 3).
    """
    cut = [list(encoded[i][:max_length]) for i in index]
    s = max(len(ids) for ids in cut)
    ids = torch.full((len(cut), s), PAD_ID, dtype=torch.long)
    rows, targets = [], {key: [] for key in TARGETS}
    for b, (i, caption) in enumerate(zip(index, cut, strict=True)):
        ids[b, : len(caption)] = torch.tensor(caption)
        for name in layouts[i]:
            for p in name.positions:
                if p < len(caption):
                    rows.append((b, p))
                    for key, values in targets.items():
                        values.append(getattr(name, key))
    return {
        "input_ids": ids,
        "attention_mask": ids != PAD_ID,
        "rows": torch.tensor(rows, dtype=torch.long).reshape(-1, 2),
        **{
            key: torch.tensor(values, dtype=torch.float32).reshape(-1, TARGETS[key]) for key, values in targets.items()
        },
    }


def training_layout_batch(
    encoded: Sequence[Sequence[int]],
    layouts: Sequence[Sequence[NameLayout]],
    seed: int,
    step: int,
    batch_size: int,
    max_length: int,
) -> dict[str, torch.Tensor]:
    """The layout batch of `step`, drawn apart from the span-corruption batch: a pure function of the step."""
    rng = np.random.default_rng([seed, step, 1])
    return layout_batch(encoded, layouts, rng.integers(len(encoded), size=batch_size).tolist(), max_length)


def layout_heads(d_model: int) -> torch.nn.ModuleDict:
    """The layout loss's read-outs, one per target (training only: the exported encoder does not carry them)."""
    heads = torch.nn.ModuleDict({key: torch.nn.Linear(d_model, n) for key, n in TARGETS.items()})
    for head in heads.values():
        torch.nn.init.normal_(head.weight, 0.0, d_model**-0.5)
        torch.nn.init.zeros_(head.bias)
    return heads
