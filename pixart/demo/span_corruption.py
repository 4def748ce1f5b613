"""T5's span-corruption objective (Raffel et al. 2020, sec. 3.1.4), as its reference code builds examples: a noise
mask of spans (`random_spans_noise_mask`), each noise span replaced by a sentinel in the input and each kept span in
the target (`span_corruption`), and the padded training batches of it (`make_batch`, `training_batch`). Used by
`pixart.demo.text_encoder` to pre-train the demo T5."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from pixart.demo.tokenizer import EOS_ID, PAD_ID

if TYPE_CHECKING:
    from pixart.demo.text_encoder import TextEncoderTrainConfig


def random_spans_noise_mask(
    length: int, noise_density: float, mean_span: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of `length` tokens, about noise_density of them noise, in spans of mean length mean_span.

    T5's `random_spans_noise_mask`: the sequence alternates non-noise / noise spans, starting with non-noise;
    span lengths are random partitions of the token counts.
    """
    if length < 2:
        return np.zeros(length, dtype=bool)
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(1, min(int(round(num_noise / mean_span)), length - num_noise))

    def segments(num_items: int) -> np.ndarray:  # random partition of num_items into num_spans non-empty parts
        first = np.arange(num_items - 1) < (num_spans - 1)
        rng.shuffle(first)
        ids = np.cumsum(np.concatenate([[0], first]))
        return np.bincount(ids, minlength=num_spans)

    lengths = np.stack([segments(length - num_noise), segments(num_noise)], axis=1).reshape(-1)  # keep, noise, ...
    starts = np.zeros(length, dtype=np.int64)
    starts[np.cumsum(lengths)[:-1]] = 1
    return np.cumsum(starts) % 2 == 1


def replace_spans(ids: Sequence[int], mask: np.ndarray, sentinels: Sequence[int]) -> list[int]:
    """Replace each run of masked tokens by the next sentinel (T5's `noise_span_to_unique_sentinel`)."""
    out, k = [], 0
    for i, (tok, m) in enumerate(zip(ids, mask, strict=True)):
        if not m:
            out.append(tok)
        elif i == 0 or not mask[i - 1]:
            out.append(sentinels[k])
            k += 1
    return out


def span_corruption(
    ids: Sequence[int], mask: np.ndarray, sentinels: Sequence[int], eos: int = EOS_ID
) -> tuple[list[int], list[int]]:
    """(inputs, targets) of one example, as T5 builds them: each noise span becomes a sentinel in the input; the
    target is the complement (each kept span becomes a sentinel), so it lists the dropped spans after their
    sentinels. The paper's example (Raffel et al. 2020, fig. 2): "Thank you <X> me to your party <Y> week </s>"
    -> "<X> for inviting <Y> last <Z> </s>". The mask must start with a kept token (random_spans_noise_mask's do),
    otherwise input and target sentinels would not line up.
    """
    mask = np.asarray(mask, dtype=bool)
    if len(mask) != len(ids) or (len(mask) and mask[0]):
        raise ValueError(f"noise mask must match the {len(ids)} ids and start with a kept token, got {mask.tolist()}")
    return replace_spans(ids, mask, sentinels) + [eos], replace_spans(ids, ~mask, sentinels) + [eos]


def make_batch(
    encoded: Sequence[Sequence[int]], cfg: TextEncoderTrainConfig, sentinels: Sequence[int], rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """Span-corrupt a batch of token lists (no eos) and pad: input_ids/attention_mask (B, S), labels (B, T)."""
    pairs = []
    for ids in encoded:
        ids = list(ids[: cfg.max_length])
        mask = random_spans_noise_mask(len(ids), cfg.noise_density, cfg.mean_noise_span_length, rng)
        pairs.append(span_corruption(ids, mask, sentinels))
    s, t = max(len(a) for a, _ in pairs), max(len(b) for _, b in pairs)
    inputs = torch.full((len(pairs), s), PAD_ID, dtype=torch.long)
    labels = torch.full((len(pairs), t), -100, dtype=torch.long)  # -100: ignored by the loss
    for i, (a, b) in enumerate(pairs):
        inputs[i, : len(a)] = torch.tensor(a)
        labels[i, : len(b)] = torch.tensor(b)
    return {"input_ids": inputs, "attention_mask": inputs != PAD_ID, "labels": labels}


def training_batch(
    encoded: Sequence[Sequence[int]], cfg: TextEncoderTrainConfig, sentinels: Sequence[int], step: int
) -> dict[str, torch.Tensor]:
    """The batch of `step`, a pure function of (corpus, cfg, step): resuming replays the same data."""
    rng = np.random.default_rng([cfg.seed, step])
    idx = rng.integers(len(encoded), size=cfg.batch_size)
    return make_batch([encoded[i] for i in idx], cfg, sentinels, rng)
