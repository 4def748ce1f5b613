"""A deterministic, resumable batch sampler over aspect-ratio buckets, and per-sample random streams.

Every global batch holds samples of one bucket, so a batch stacks into one tensor. The order of an epoch depends
only on (seed, epoch): each bucket's indices are shuffled, cut into batches, and the batches of all buckets are
shuffled together. The sampler counts the batches it has handed out, so `state_dict()` / `load_state_dict()`
resume exactly where a run stopped.

Small buckets: a bucket's last, incomplete batch is padded with samples of the same bucket taken again from the
start of its shuffled order (so a 1-image bucket with batch 4 gives one batch of that image 4 times). Every
sample is seen at least once per epoch and no bucket starves, whatever its size. `drop_last=True` drops the
incomplete tail instead (the reference's behaviour), except in a bucket too small for a single batch, which
still gets one padded batch per epoch.

Many processes: every rank runs the same sampler (same seed) and keeps `shard(batch, rank, world_size)`, its
contiguous slice of each global batch; together the ranks see exactly what one process with the same global
batch sees, and a resumed run may use a different number of processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Independent random streams derived from the seed: changing how one is used never shifts another.
STREAM_BATCHES, STREAM_CAPTION, STREAM_NOISE, STREAM_SUBSTITUTE = 0, 1, 2, 3


def sample_rng(seed: int, epoch: int, index: int, stream: int) -> np.random.Generator:
    """A numpy generator determined by (seed, epoch, sample index, stream), the same in every process."""
    return np.random.default_rng([stream, int(seed), int(epoch), int(index)])


def sample_generator(seed: int, epoch: int, index: int, stream: int) -> torch.Generator:
    """A CPU torch generator determined by (seed, epoch, sample index, stream)."""
    state = np.random.SeedSequence([stream, int(seed), int(epoch), int(index)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def shard(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This rank's contiguous slice of a global batch; the slices of ranks 0..world_size-1 concatenate to it."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if len(batch) % world_size:
        raise ValueError(f"a global batch of {len(batch)} does not split evenly over {world_size} processes")
    per = len(batch) // world_size
    return list(batch[rank * per : (rank + 1) * per])


class BucketBatchSampler:
    """Yields global batches (lists of dataset indices), each from one bucket, in an order fixed by (seed, epoch).

    Args:
        buckets: the bucket key of every sample (`dataset.bucket_keys()`); keys must be hashable.
        global_batch_size: samples per optimiser step over all processes.
        seed: base seed of the shuffles.
        drop_last: drop each bucket's incomplete last batch instead of padding it (a bucket smaller than one
            batch is padded regardless, so it is never starved).
        rank, world_size: with world_size > 1, yield only this rank's `shard` of each global batch.

    Use as `DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)`, and call `set_epoch(e)` before each
    epoch. Iterating past the end of an epoch moves on to the next one. `len(sampler)` is the number of batches
    per epoch, the same for every epoch.
    """

    def __init__(
        self,
        buckets: Sequence[Hashable],
        global_batch_size: int,
        seed: int = 0,
        drop_last: bool = False,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if int(global_batch_size) < 1:
            raise ValueError(f"global_batch_size must be at least 1, got {global_batch_size}")
        if world_size < 1 or not 0 <= rank < world_size or global_batch_size % world_size:
            raise ValueError(
                f"global batch {global_batch_size} must split evenly over world_size={world_size} (rank {rank})"
            )
        self.global_batch_size, self.seed, self.drop_last = int(global_batch_size), int(seed), bool(drop_last)
        self.rank, self.world_size = rank, world_size
        groups: dict[Hashable, list[int]] = {}
        for index, key in enumerate(buckets):
            groups.setdefault(key, []).append(index)
        # Sorted by key text so the batch order does not depend on the order samples were listed in.
        self._groups = [np.asarray(groups[k], dtype=np.int64) for k in sorted(groups, key=str)]
        self.num_samples = len(buckets)
        digest = hashlib.sha256()
        for key, group in zip(sorted(groups, key=str), self._groups, strict=True):
            digest.update(json.dumps(str(key)).encode() + group.astype("<i8").tobytes())
        self.fingerprint = digest.hexdigest()[:16]  # identifies the bucket assignment a state belongs to
        self._length = sum(self._batches_in(len(g)) for g in self._groups)
        self.epoch, self.batches_done = 0, 0
        self._plan: tuple[int, list[np.ndarray]] | None = None

    def _batches_in(self, n: int) -> int:
        full, rest = divmod(n, self.global_batch_size)
        return full + (1 if rest and (not self.drop_last or full == 0) else 0)

    def __len__(self) -> int:
        return self._length

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """All global batches of an epoch, in order (a pure function of seed, epoch and the buckets)."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        rng = np.random.default_rng([STREAM_BATCHES, self.seed, int(epoch)])
        size, batches = self.global_batch_size, []
        for group in self._groups:
            order = group[rng.permutation(len(group))]
            for start in range(0, len(order), size):
                batch = order[start : start + size]
                if len(batch) < size:
                    if self.drop_last and start > 0:
                        break
                    batch = np.concatenate([batch, np.resize(order, size - len(batch))])  # pad, same bucket
                batches.append(batch)
        batches = [batches[i] for i in rng.permutation(len(batches))]
        self._plan = (int(epoch), batches)
        return batches

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch; the current epoch (e.g. one just resumed) keeps its position."""
        if int(epoch) != self.epoch:
            self.epoch, self.batches_done = int(epoch), 0

    def __iter__(self) -> Iterator[list[int]]:
        if self._length == 0:
            return
        if self.batches_done >= self._length:
            self.epoch, self.batches_done = self.epoch + 1, 0
        epoch, batches = self.epoch, self.epoch_batches(self.epoch)
        for position in range(self.batches_done, len(batches)):
            self.batches_done = position + 1
            batch = batches[position].tolist()
            yield shard(batch, self.rank, self.world_size) if self.world_size > 1 else batch
        if self.epoch == epoch:  # finished normally: the next iteration is the next epoch
            self.epoch, self.batches_done = epoch + 1, 0

    def state_dict(self, *, epoch: int | None = None, batches_done: int | None = None) -> dict:
        """Where the sampler stands: {"epoch", "batches_done", ...}; a finished epoch is saved as the next one.

        A DataLoader with workers draws batches ahead of the training step, so the sampler's own count runs
        ahead; a training loop should then pass the epoch and the number of batches it actually trained on.
        """
        epoch = self.epoch if epoch is None else int(epoch)
        done = self.batches_done if batches_done is None else int(batches_done)
        if self._length and done >= self._length:
            epoch, done = epoch + 1, 0
        return {
            "epoch": epoch,
            "batches_done": done,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "drop_last": self.drop_last,
            "num_samples": self.num_samples,
            "fingerprint": self.fingerprint,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved state. Refuses one saved with another seed, batch size or bucket assignment."""
        for key in ("seed", "global_batch_size", "drop_last", "num_samples", "fingerprint"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]!r} but this sampler has {getattr(self, key)!r}: "
                    "resuming would not give the batches of the interrupted run"
                )
        done = int(state["batches_done"])
        if not 0 <= done <= self._length:
            raise ValueError(f"sampler state has batches_done={done}, outside [0, {self._length}]")
        self.epoch, self.batches_done = int(state["epoch"]), done
