"""Extra losses that shape the demo T5's word vectors for the DiT, added to span corruption in
`pixart.demo.text_encoder`: word identity (each word's output names its own piece), context invariance (a word's
outputs in different captions stay together), neighbours (each word's output names the pieces around it) and
layout (each emoji name's pieces say where their object is and how large; targets from
`pixart.demo.caption_layout`); the neighbour read-outs, and a head start for the relative-position bias, which the
demo T5s otherwise leave at its initial scale (nearly blind to word order).

Span corruption alone asks the encoder to carry a caption's content; these ask what a DiT reading the features
through cross-attention needs from each word's own vector (docs/demo-model.md, "Why no model draws the emoji" and
"What a name's features say about its phrase").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from transformers import T5ForConditionalGeneration

from pixart.demo.tokenizer import EOS_ID

if TYPE_CHECKING:
    from pixart.demo.text_encoder import TextEncoderTrainConfig


def word_identity_loss(
    model: T5ForConditionalGeneration, encoded: torch.Tensor, input_ids: torch.Tensor, first_special: int
) -> torch.Tensor:
    """Cross-entropy of each visible word piece's own id, read from its encoder output through the output head.

    Span corruption only asks the encoder to carry a caption's content; nothing keeps a word's vector the same from
    one caption to the next, and the demo T5 trained that way blurs each emoji name with the words around it, so
    that the DiT learns (name, background) pairs instead of names (docs/demo-model.md, `scripts/identity_rule.py`).
    This term asks every output to say which piece it is, against all the others. Pad, eos and the sentinels
    (ids >= `first_special`, appended after the pieces) are not asked.
    encoded: (B, S, D) encoder outputs; input_ids: (B, S).
    """
    target = input_ids.masked_fill((input_ids <= EOS_ID) | (input_ids >= first_special), -100)  # (B, S)
    logits = model.lm_head(encoded)  # (B, S, V)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)


def context_invariance_loss(encoded: torch.Tensor, input_ids: torch.Tensor, first_special: int) -> torch.Tensor:
    """The share of the visible word pieces' output variance that comes from context, in [0, 1].

    For each piece id in the batch, the squared spread of its outputs around their mean, summed, over the squared
    spread of all the outputs around their mean. 0 means every piece has one vector whatever the caption around
    it; the DiT learns identity from such names as fast as from fixed random vectors (`scripts/identity_rule.py
    --names-average`). Word identity alone leaves a name about a fifth context (docs/demo-model.md); this term
    pushes that share down, against span corruption, which needs some context to place the dropped spans.
    encoded: (B, S, D) encoder outputs; input_ids: (B, S). Pad, eos and sentinels are left out as above.
    """
    keep = (input_ids > EOS_ID) & (input_ids < first_special)  # (B, S)
    h, ids = encoded[keep], input_ids[keep]  # (N, D), (N,)
    _, piece = torch.unique(ids, return_inverse=True)  # (N,): index of each output's piece
    sums = torch.zeros(int(piece.max()) + 1, h.shape[1], dtype=h.dtype).index_add_(0, piece, h)  # (P, D)
    means = sums / torch.bincount(piece).unsqueeze(1)  # (P, D)
    within = (h - means[piece]).pow(2).sum()
    total = (h - h.mean(0)).pow(2).sum()
    return within / total.clamp_min(1e-12)


def neighbour_loss(
    heads: torch.nn.ModuleList,
    offsets: Sequence[int],
    encoded: torch.Tensor,
    input_ids: torch.Tensor,
    first_special: int,
) -> torch.Tensor:
    """Mean over `offsets` of the cross-entropy of the word piece `k` places from each visible piece, read from
    that piece's output through head k.

    Word identity and context invariance give every name one vector, and with it they take away what the name's
    phrase says about it: in "a large panda above a rainbow" neither T5 tells from the name's features alone which
    object is large, or which is the upper one (a linear probe: chance; docs/demo-model.md). The DiT's
    cross-attention sees the caption's tokens as a set, so that must be in the name's own vector. Naming its
    neighbours puts it there: "large" before it, "above" or "on" after it. Pairs whose either end is pad, eos or a
    sentinel are not asked. encoded: (B, S, D) encoder outputs; input_ids: (B, S).
    """
    visible = (input_ids > EOS_ID) & (input_ids < first_special)  # (B, S)
    losses = []
    for head, k in zip(heads, offsets, strict=True):
        target = torch.full_like(input_ids, -100)  # (B, S): the id k places on, where both ends are word pieces
        if k > 0:
            target[:, :-k] = input_ids[:, k:].masked_fill(~(visible[:, :-k] & visible[:, k:]), -100)
        else:
            target[:, -k:] = input_ids[:, :k].masked_fill(~(visible[:, -k:] & visible[:, :k]), -100)
        logits = head(encoded)  # (B, S, V)
        losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100))
    return torch.stack(losses).mean()


def layout_loss(heads: torch.nn.ModuleDict, encoded: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of soft cross-entropies, one per head: each name piece's cell, size and ranks (from the top, from the
    left) in the scene, read from its output.

    Context invariance gives a name one vector whatever its phrase says, and neighbours put only a little of the
    phrase into it (docs/demo-model.md); this term asks for the phrase's meaning itself: where the object is and
    how large (targets from `pixart.demo.caption_layout`). encoded: (B, S, D) encoder outputs of the batch's clean
    captions; batch["rows"]: (N, 2) (caption, token) of every name piece; batch[key] (N, classes) each head's
    targets.
    """
    rows = batch["rows"]
    if rows.numel() == 0:
        return encoded.sum() * 0.0
    h = encoded[rows[:, 0], rows[:, 1]]  # (N, D)
    losses = [-(batch[key] * torch.log_softmax(heads[key](h).float(), dim=-1)).sum(-1).mean() for key in heads]
    return torch.stack(losses).mean()


def keep_loss(encoded: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, dims: int) -> torch.Tensor:
    """The share of the reference outputs' variance that the first `dims` channels miss, over the real tokens.

    encoded, target: (B, S, D) this encoder's and a frozen reference encoder's outputs for the same captions;
    mask: (B, S) attention mask. 0 when the channels are the reference's; 1 for a constant at their mean.
    """
    keep = mask.bool()
    h, t = encoded[..., :dims][keep], target[..., :dims][keep]  # (N, dims)
    return (h - t).pow(2).sum() / (t - t.mean(0)).pow(2).sum().clamp_min(1e-12)


def neighbour_heads(cfg: TextEncoderTrainConfig, vocab_size: int) -> torch.nn.ModuleList:
    """One linear read-out per neighbour offset (training only: the exported encoder does not carry them)."""
    heads = torch.nn.ModuleList(torch.nn.Linear(cfg.d_model, vocab_size, bias=False) for _ in cfg.neighbour_offsets)
    for head in heads:
        torch.nn.init.normal_(head.weight, 0.0, cfg.d_model**-0.5)
    return heads


def add_position_bias(model: T5ForConditionalGeneration, items: Sequence[tuple[int, int, float]]) -> None:
    """Add `bias` to the encoder's relative-position bias of (head, offset) for each item (offset = key position -
    query position). T5 shares the bias across layers and inits it at std d_model^-0.5: next to content logits of
    5-20 a trained demo T5 is nearly blind to word order ("a panda above a rainbow" and "a rainbow above a panda"
    give the panda vectors 1% apart; docs/demo-model.md)."""
    attention = model.encoder.block[0].layer[0].SelfAttention
    for head, offset, bias in items:
        bucket = attention._relative_position_bucket(
            torch.tensor(offset),
            bidirectional=True,
            num_buckets=attention.relative_attention_num_buckets,
            max_distance=attention.relative_attention_max_distance,
        )
        with torch.no_grad():
            attention.relative_attention_bias.weight[bucket, head] += bias


def parse_position_init(text: str) -> tuple[tuple[int, int, float], ...]:
    """ "0:-1:8,2:1:8" -> ((0, -1, 8.0), (2, 1, 8.0)); ValueError names a bad item."""
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        parts = item.split(":")
        try:
            head, offset, bias = int(parts[0]), int(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise ValueError(f"--position-init item {item!r}: expected HEAD:OFFSET:BIAS, e.g. 0:-1:8") from None
        if len(parts) != 3 or offset == 0:
            raise ValueError(f"--position-init item {item!r}: expected HEAD:OFFSET:BIAS with OFFSET != 0")
        out.append((head, offset, bias))
    return tuple(out)
