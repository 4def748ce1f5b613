"""`pixart.train.batches`: the run's batches numbered by step, built here or by DataLoader workers."""

from __future__ import annotations

import pytest

from pixart.data.sampler import BucketBatchSampler
from pixart.train.batches import StepBatches, step_batches


class Samples:
    """Sample i of epoch e is (e, i): shows which epoch each sample was drawn for."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> tuple[int, int]:
        return (self.epoch, i)


def sampler(n: int = 10, batch: int = 4) -> BucketBatchSampler:
    return BucketBatchSampler(["a"] * 6 + ["b"] * (n - 6), batch, seed=3)


def test_items_are_the_samplers_batches_from_its_saved_position_across_epochs():
    reference = sampler()
    expected = []
    for epoch in range(3):
        reference.set_epoch(epoch)
        expected += [(batch, epoch) for batch in reference]
    per_epoch = len(reference)  # 2 batches of "a", 1 of "b"

    resumed = sampler()
    resumed.load_state_dict({"epoch": 0, "batches_done": 2})  # as a checkpoint after two steps says
    items = StepBatches(Samples(10), resumed, list, steps=6)
    got = [items[k] for k in range(len(items))]
    assert [(b, e, p) for b, e, p in got] == [
        ([(e, i) for i in batch], e, (2 + k) % per_epoch) for k, (batch, e) in enumerate(expected[2:8])
    ]
    with pytest.raises(IndexError):
        items[6]


def test_each_process_gets_its_share_of_the_global_batch():
    whole = StepBatches(Samples(10), sampler(), list, steps=3)
    halves = [StepBatches(Samples(10), sampler(), list, steps=3, rank=r, world_size=2) for r in (0, 1)]
    for k in range(3):
        assert halves[0].indices(k) + halves[1].indices(k) == whole.indices(k)
        assert len(halves[0].indices(k)) == 2


def test_workers_yield_the_same_items_in_order():
    items = StepBatches(Samples(10), sampler(), list, steps=7)
    assert list(step_batches(items, workers=2)) == list(step_batches(items, workers=0))
    with pytest.raises(ValueError, match="workers must be >= 0"):
        step_batches(items, workers=-1)


def test_an_empty_sampler_is_refused():
    with pytest.raises(ValueError, match="no batches"):
        StepBatches(Samples(0), BucketBatchSampler([], 4), list, steps=1)
