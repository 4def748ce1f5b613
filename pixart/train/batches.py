"""The batches of a training run, one per optimizer step, optionally assembled by DataLoader worker processes.

The loop's batches are a pure function of the sampler's plan (seed, epoch, position) and the step, so they can be
made ahead of time, in other processes, without changing what the run computes. `StepBatches` numbers them:
item k is this process's collated share of the k-th global batch after the sampler's saved position, with the
(epoch, position) it came from, which the loop records as the sampler's state once it has trained on it (the
sampler's own count would run ahead of training when workers draw batches early).

`step_batches(..., workers=0)` builds each batch in the training process, as before; `workers > 0` has a
`DataLoader` build them in that many processes, a few batches ahead. That matters when the model is small next to
its accelerator, as the demo DiT on a GPU (reading a sample from the cache costs about 0.2 ms on a 2-core CPU, so a
batch of 256 costs about 50 ms, a large share of the 75 ms a step of 64 took on an H200), and on raw images, where
each image is decoded and resized, for any model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch.utils.data import DataLoader, Dataset

from pixart.data.sampler import BucketBatchSampler, shard


class StepBatches(Dataset):
    """Item k: (collated local batch, epoch, position) of the k-th step after the sampler's saved position.

    Args:
        dataset: map-style samples (`set_epoch(e)` is called before an epoch's samples when it has one).
        sampler: the run's `BucketBatchSampler`, at its saved position; it is only read.
        collate: makes a batch of a list of samples.
        steps: how many batches to number.
        rank, world_size: this process's contiguous share of each global batch (`shard`).
    """

    def __init__(
        self,
        dataset: Any,
        sampler: BucketBatchSampler,
        collate: Callable[[list], Any],
        steps: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(sampler) == 0:
            raise ValueError("the sampler has no batches (an empty dataset?)")
        self.dataset, self.sampler, self.collate = dataset, sampler, collate
        self.steps, self.rank, self.world_size = max(0, int(steps)), rank, world_size
        self.start = sampler.epoch * len(sampler) + sampler.batches_done  # batches already trained on, all epochs

    def __len__(self) -> int:
        return self.steps

    def position(self, k: int) -> tuple[int, int]:
        """(epoch, index of the batch in that epoch) of item k."""
        return divmod(self.start + k, len(self.sampler))

    def indices(self, k: int) -> list[int]:
        """This process's sample indices of item k."""
        epoch, position = self.position(k)
        return shard(self.sampler.epoch_batches(epoch)[position].tolist(), self.rank, self.world_size)

    def __getitem__(self, k: int) -> tuple[Any, int, int]:
        if not 0 <= k < self.steps:
            raise IndexError(k)
        epoch, position = self.position(k)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)  # the per-epoch draws (latent noise, caption choice) of its samples
        return self.collate([self.dataset[i] for i in self.indices(k)]), epoch, position


def _as_is(item: Any) -> Any:
    return item


def step_batches(batches: StepBatches, workers: int = 0, prefetch: int = 4) -> Iterable[tuple[Any, int, int]]:
    """The items of `batches` in order: built here (`workers=0`), or by `workers` DataLoader processes that keep
    up to `prefetch` batches each ready ahead of the loop."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0:
        return (batches[k] for k in range(len(batches)))
    return DataLoader(
        batches, batch_size=None, shuffle=False, num_workers=workers, prefetch_factor=prefetch, collate_fn=_as_is
    )
