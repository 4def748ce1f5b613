"""Reading a feature cache written by `pixart prepare` (`pixart.data.cache`, which documents the layout).

Training draws each sample's latent afresh from the stored VAE posterior (mean + std * noise, the noise seeded
by seed, epoch and index, so a resumed run sees the same latents) and pads the stored caption features back to
the model's caption length. Several caches can be trained on as one (`MixedCachedDataset`: data.mix), each
repeated a set number of times an epoch.
"""

from __future__ import annotations

import bisect
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pixart.data.buckets import normalise_bins
from pixart.data.dataset import _check_ratio, _common_bucket, aspect_value, use_long_caption
from pixart.data.sampler import STREAM_NOISE, sample_generator

FORMAT = "pixart-feature-cache/1"
INDEX = "index.json"
NULL_CAPTION = "null_caption.safetensors"


def read_index(cache_dir: str | os.PathLike[str]) -> dict:
    """The cache's index.json. Raises FileNotFoundError / ValueError if it is missing or not a cache index."""
    path = Path(cache_dir) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{cache_dir} is not a feature cache (no {INDEX}); make one with `pixart prepare`")
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} index (format {index.get('format')!r})")
    return index


def read_null_caption(cache_dir: str | os.PathLike[str]) -> Tensor | None:
    """T5("") as the cache's encoder gives it, (max_tokens, D) float32; None for a cache made before it was stored."""
    path = Path(cache_dir) / NULL_CAPTION
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(path))["features"]


class CachedDataset(Dataset):
    """Samples of a feature cache: a latent drawn from the stored posterior, and T5 features padded back.

    Args:
        cache_dir: a folder written by `prepare_cache` / `pixart prepare` (complete).
        long_caption_ratio: probability of using a sample's long caption when it has one.
        seed: base seed of latent noise and caption choice; with the epoch and index it fixes both.
        max_tokens: caption length L after padding (default: the cache's; must not be shorter).
        dtype: dtype of the returned caption features.

    A sample is {"latent": (C, h, w) float32 = scaling_factor * (mean + std * ε - shift_factor), ε drawn from a
    generator seeded by (seed, epoch, index) — ready for the transformer, like the reference's
    `posterior.sample() * scale_factor`; "caption": (L, D); "caption_mask": (L,) bool; "bucket": key;
    "size": (H, W) image size; "orig_size": (h, w); "index": int; "long": bool}. Call `set_epoch(e)` each epoch.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *,
        long_caption_ratio: float = 0.5,
        seed: int = 0,
        max_tokens: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        index = read_index(self.cache_dir)
        if not index.get("complete"):
            raise ValueError(f"{cache_dir} is incomplete (an interrupted `pixart prepare`?); run it again to finish")
        self.settings = index["settings"]
        self.bins = normalise_bins(self.settings["bins"])
        self.max_tokens = int(max_tokens or self.settings["max_tokens"])
        if self.max_tokens < self.settings["max_tokens"]:
            raise ValueError(f"max_tokens={self.max_tokens} is shorter than the cache's {self.settings['max_tokens']}")
        self.scaling_factor = float(self.settings["vae"]["scaling_factor"])
        self.shift_factor = float(self.settings["vae"].get("shift_factor", 0.0))
        self.long_caption_ratio, self.seed, self.epoch = _check_ratio(long_caption_ratio), int(seed), 0
        self.dtype = dtype
        self.skipped = Counter(index.get("skipped", {}))
        self.shard_files = [s["file"] for s in index["shards"]]
        # (shard, row, bucket, orig h, orig w, has_long, name) per sample, in the order written
        self.entries = [
            (i, r[0], r[2], r[3], r[4], bool(r[5]), r[1]) for i, s in enumerate(index["shards"]) for r in s["rows"]
        ]
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}  # open files stay in their process; DataLoader workers open their own
        return state

    def bucket_keys(self) -> list[str]:
        """The bucket of every sample, for `BucketBatchSampler`."""
        return [e[2] for e in self.entries]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"{len(self)} cached samples in {len(set(self.bucket_keys()))} buckets; skipped when preparing: {reasons}"
        )

    def _shard(self, number: int):
        from safetensors import safe_open

        if number not in self._handles:
            self._handles[number] = safe_open(str(self.cache_dir / self.shard_files[number]), framework="pt")
        return self._handles[number]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(index, index)

    def sample(self, index: int, stream: int) -> dict[str, Any]:
        """Sample `index`, its latent noise and caption choice drawn from the random streams of sample `stream`."""
        shard, row, key, height, width, has_long, _ = self.entries[index]
        f = self._shard(shard)
        mean, std = f.get_tensor(f"{row}.mean").float(), f.get_tensor(f"{row}.std").float()  # (C, h, w)
        noise = torch.randn(mean.shape, generator=sample_generator(self.seed, self.epoch, stream, STREAM_NOISE))
        latent = (mean + std * noise - self.shift_factor) * self.scaling_factor  # (C, h, w)
        long = use_long_caption(has_long, self.long_caption_ratio, self.seed, self.epoch, stream)
        name = f"{row}.long" if long else f"{row}.text"
        features, mask = f.get_tensor(name), f.get_tensor(f"{name}_mask")  # (n, D), (n,)
        caption = torch.zeros(self.max_tokens, features.shape[-1], dtype=self.dtype)  # (L, D)
        caption[: len(features)] = features.to(self.dtype)
        caption_mask = torch.zeros(self.max_tokens, dtype=torch.bool)  # (L,)
        caption_mask[: len(mask)] = mask
        return {
            "latent": latent,
            "caption": caption,
            "caption_mask": caption_mask,
            "bucket": key,
            "size": self.bins[key],
            "orig_size": (height, width),
            "index": stream,
            "long": long,
        }


class MixedCachedDataset(Dataset):
    """Several feature caches trained on as one dataset: each appears `repeats` times in an epoch.

    Args:
        parts: (cache, repeats) pairs; the caches must come from the same text encoder and VAE (their configs'
            hashes, scaling and shift factors), caption length and bucket table, so that their samples can share a
            batch. A cache repeated n times contributes n copies of each sample an epoch, each with its own latent
            noise and caption choice (the streams of its index in the mixture).

    The mixture's index space is the caches one after another, each repeated in place; `bucket_keys`, `set_epoch`
    and the samples are those of `CachedDataset`, so the bucket sampler and the loop need nothing else.
    """

    def __init__(self, parts: Sequence[tuple[CachedDataset, int]]) -> None:
        if not parts:
            raise ValueError("a cache mixture needs at least one cache")
        first = parts[0][0]
        for dataset, repeats in parts:
            if int(repeats) < 1:
                raise ValueError(f"{dataset.cache_dir}: repeats={repeats}, must be >= 1")
            ours, ref = dataset.settings, first.settings
            for what, mine, theirs in (
                ("text encoder", _fingerprint(ours["text_encoder"]), _fingerprint(ref["text_encoder"])),
                ("VAE", _fingerprint(ours["vae"]), _fingerprint(ref["vae"])),
                ("max_tokens", dataset.max_tokens, first.max_tokens),
                ("bucket table", dataset.bins, first.bins),
            ):
                if mine != theirs:
                    raise ValueError(
                        f"{dataset.cache_dir} and {first.cache_dir} differ in their {what}; a mixture's caches must "
                        "be prepared with the same text encoder, VAE, max_tokens and resolution"
                    )
        self.parts = [(dataset, int(repeats)) for dataset, repeats in parts]
        self.bins, self.max_tokens, self.settings = first.bins, first.max_tokens, first.settings
        self.starts: list[int] = []  # index of each part's first sample in the mixture
        total = 0
        for dataset, repeats in self.parts:
            self.starts.append(total)
            total += len(dataset) * repeats
        self.length = total

    def __len__(self) -> int:
        return self.length

    def bucket_keys(self) -> list[str]:
        return [key for dataset, repeats in self.parts for key in dataset.bucket_keys() * repeats]

    def set_epoch(self, epoch: int) -> None:
        for dataset, _ in self.parts:
            dataset.set_epoch(epoch)

    def summary(self) -> str:
        return "; ".join(f"{d.cache_dir} x{r}: {d.summary()}" for d, r in self.parts) + f"; {len(self)} in all"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a mixture of {self.length} samples")
        part = bisect.bisect_right(self.starts, index) - 1
        dataset, _ = self.parts[part]
        return dataset.sample((index - self.starts[part]) % len(dataset), index)


def _fingerprint(settings: Mapping[str, Any]) -> tuple:
    """What identifies an encoder in a cache's settings: its config hash and (for a VAE) its latent scaling."""
    return (settings.get("config_sha256"), settings.get("scaling_factor"), settings.get("shift_factor"))


def collate_cached(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack cached samples of one bucket.

    Returns: {"latent": (B, C, h, w), "caption": (B, L, D), "caption_mask": (B, L) bool, "bucket": key,
    "size": (H, W), "resolution": (B, 2) float original (h, w), "aspect_ratio": (B, 1) float,
    "index": (B,) long, "long": (B,) bool}.
    """
    key, size = _common_bucket(samples)
    return {
        "latent": torch.stack([s["latent"] for s in samples]),
        "caption": torch.stack([s["caption"] for s in samples]),
        "caption_mask": torch.stack([s["caption_mask"] for s in samples]),
        "bucket": key,
        "size": size,
        "resolution": torch.tensor([s["orig_size"] for s in samples], dtype=torch.float32),
        "aspect_ratio": torch.full((len(samples), 1), aspect_value(key, size)),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "long": torch.tensor([bool(s["long"]) for s in samples]),
    }
