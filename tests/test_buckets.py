"""Aspect-ratio buckets, resize-cover + centre-crop, and the deterministic resumable bucket batch sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixart.data.buckets import (
    bins_for,
    closest_bucket,
    fixed_bins,
    normalise_bins,
    parse_size,
    resample_name,
)
from pixart.data.sampler import BucketBatchSampler, sample_generator, sample_rng, shard
from pixart.data.transforms import center_crop_box, cover_size, resize_cover_crop, to_tensor

# ---- bucket choice ------------------------------------------------------------------------------------------------


def _reference_choice(height: float, width: float, bins: dict) -> str:
    """The reference rule, spelled out: the key with the smallest |float(key) - h/w|, first one on ties."""
    ratio, best = height / width, None
    for key in bins:
        if best is None or abs(float(key) - ratio) < abs(float(best) - ratio):
            best = key
    return best


def test_bucket_choice_matches_reference_rule():
    bins = bins_for(1024)
    assert len(bins) == 40 and bins["1.0"] == (1024, 1024)
    assert closest_bucket(1024, 1024, bins) == "1.0"
    assert closest_bucket(768, 1344, bins) == "0.57"  # a bin size maps to its own bin
    assert closest_bucket(1080, 1920, bins) == "0.57"  # 16:9 landscape, h/w = 0.5625
    assert closest_bucket(1920, 1080, bins) == "1.75"  # 16:9 portrait, 1.78
    assert closest_bucket(10000, 100, bins) == "4.0"  # beyond the table: the extreme bin
    assert closest_bucket(100, 10000, bins) == "0.25"
    rng = np.random.default_rng(0)
    for h, w in rng.integers(16, 5000, size=(300, 2)):
        assert closest_bucket(int(h), int(w), bins) == _reference_choice(int(h), int(w), bins)


def test_bucket_ties_go_to_the_first_listed():
    assert closest_bucket(1, 1, {"0.5": (8, 16), "1.5": (24, 16)}) == "0.5"
    assert closest_bucket(1, 1, {"1.5": (24, 16), "0.5": (8, 16)}) == "1.5"


def test_tables_and_fixed_size_mode():
    assert bins_for(256)["1.0"] == (256, 256) and bins_for(2048)["1.0"] == (2048, 2048)
    assert resample_name(bins_for(1024)) == "bicubic" and resample_name(bins_for(512)) == "bicubic"
    assert resample_name(bins_for(2048)) == "lanczos" and resample_name(bins_for(2880)) == "lanczos"
    one = fixed_bins(512, 768)
    assert list(one.values()) == [(512, 768)]
    assert {closest_bucket(h, w, one) for h, w in [(10, 1000), (1000, 10), (3, 3)]} == set(one)
    assert parse_size("512") == (512, 512) and parse_size("768x1344") == (768, 1344)
    with pytest.raises(ValueError):
        parse_size("12x")
    with pytest.raises(ValueError):
        normalise_bins({})
    with pytest.raises(ValueError):
        normalise_bins({"1.0": (512, 0)})
    with pytest.raises(ValueError):
        normalise_bins({"square": (512, 512)})
    assert normalise_bins({"1.0": [512.0, 512.0]}) == {"1.0": (512, 512)}


# ---- resize to cover, centre crop, to tensor ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "target"),
    [((37, 101), (64, 48)), ((1, 1), (32, 32)), ((999, 3), (40, 24)), ((7, 7), (5, 3)), ((1080, 1920), (48, 80))],
)
def test_resize_cover_crop_gives_exactly_the_bucket_size(size, target):
    h, w = size
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
    out = resize_cover_crop(image, target)
    assert (out.height, out.width) == target
    ch, cw = cover_size(h, w, target)
    assert ch >= target[0] and cw >= target[1] and (ch == target[0] or cw == target[1])


def test_cover_size_is_the_reference_rule_without_float_error():
    rng = np.random.default_rng(1)
    for (h, w), (th, tw) in zip(rng.integers(1, 4000, (500, 2)), rng.integers(16, 2048, (500, 2)), strict=True):
        h, w, th, tw = int(h), int(w), int(th), int(tw)
        if th / h > tw / w:
            reference = (th, int(w * th / h))
        else:
            reference = (int(h * tw / w), tw)
        ours = cover_size(h, w, (th, tw))
        assert ours[0] >= th and ours[1] >= tw
        assert all(abs(a - b) <= 1 for a, b in zip(ours, reference, strict=True))  # float truncation may differ by 1


def test_center_crop_and_normalisation():
    assert center_crop_box(10, 7, (4, 3)) == (2, 3, 5, 7)  # torchvision: top=round(3.0), left=round(2.0)
    assert center_crop_box(5, 5, (2, 2)) == (2, 2, 4, 4)  # round(1.5) == 2
    gradient = np.tile(np.arange(10, dtype=np.uint8)[None, :, None] * 25, (4, 1, 3))  # (4, 10, 3), columns 0..225
    out = resize_cover_crop(Image.fromarray(gradient), (4, 4))  # no resize needed: a pure centre crop
    assert np.array_equal(np.asarray(out)[0, :, 0], [75, 100, 125, 150])
    pixels = to_tensor(Image.fromarray(np.array([[[0, 255, 51]]], dtype=np.uint8)))
    assert pixels.shape == (3, 1, 1) and pixels.dtype == torch.float32
    assert torch.allclose(pixels.flatten(), torch.tensor([-1.0, 1.0, (51 / 255 - 0.5) / 0.5]), atol=1e-6)


# ---- the batch sampler -------------------------------------------------------------------------------------------

KEYS = ["a"] * 9 + ["b"] * 1 + ["c"] * 6 + ["d"] * 3  # 19 samples; b and d are smaller than a batch


def _bucket_of(batch):
    return {KEYS[i] for i in batch}


def test_every_batch_is_one_bucket_and_every_sample_is_seen():
    sampler = BucketBatchSampler(KEYS, 4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 + 1 + 2 + 1
    assert all(len(b) == 4 and len(_bucket_of(b)) == 1 for b in batches)
    assert {i for b in batches for i in b} == set(range(len(KEYS)))  # nothing starves


def test_small_buckets_are_padded_within_their_bucket():
    sampler = BucketBatchSampler(["x"] * 5 + ["lonely"], 4, seed=3)
    batches = list(sampler)
    assert [5, 5, 5, 5] in batches  # 1 sample, batch 4: that sample 4 times
    x = [b for b in batches if 5 not in b]
    assert len(x) == 2 and sorted(set(x[0] + x[1])) == [0, 1, 2, 3, 4]
    dropped = BucketBatchSampler(["x"] * 5 + ["lonely"], 4, seed=3, drop_last=True)
    assert len(dropped) == 2 and [5, 5, 5, 5] in list(dropped)  # drop_last never starves a tiny bucket
    assert all(len(b) == 4 for b in dropped.epoch_batches(0))


def test_edge_cases_never_crash_or_loop():
    assert list(BucketBatchSampler([], 4)) == [] and len(BucketBatchSampler([], 4)) == 0
    assert list(BucketBatchSampler(["a"], 1)) == [[0]]
    assert list(BucketBatchSampler(["a"], 3)) == [[0, 0, 0]]
    with pytest.raises(ValueError):
        BucketBatchSampler(KEYS, 0)
    with pytest.raises(ValueError):
        BucketBatchSampler(KEYS, 6, world_size=4)


def test_order_depends_only_on_seed_and_epoch():
    a, b = BucketBatchSampler(KEYS, 4, seed=7), BucketBatchSampler(KEYS, 4, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    epoch2 = list(a)
    assert epoch2 == list(b)
    assert [x.tolist() for x in a.epoch_batches(2)] == epoch2
    assert [x.tolist() for x in a.epoch_batches(3)] != epoch2
    assert [x.tolist() for x in BucketBatchSampler(KEYS, 4, seed=8).epoch_batches(2)] != epoch2
    # The listing order of samples does not matter, only which bucket each index is in.
    shuffled = BucketBatchSampler(list(KEYS), 4, seed=7)
    assert [x.tolist() for x in shuffled.epoch_batches(2)] == epoch2


def test_iterating_on_moves_to_the_next_epoch():
    sampler = BucketBatchSampler(KEYS, 4, seed=1)
    first, second = list(sampler), list(sampler)
    assert sampler.epoch == 2 and first == [x.tolist() for x in sampler.epoch_batches(0)]
    assert second == [x.tolist() for x in sampler.epoch_batches(1)]


@pytest.mark.parametrize("k", [0, 3, 7, 10])
def test_resume_gives_exactly_the_remaining_batches(k):
    reference = BucketBatchSampler(KEYS, 4, seed=5)
    stream = [b for _ in range(2) for b in reference]  # two uninterrupted epochs
    run = BucketBatchSampler(KEYS, 4, seed=5)
    it = iter(run)
    seen = []
    while len(seen) < k:
        try:
            seen.append(next(it))
        except StopIteration:
            it = iter(run)
    state = run.state_dict()
    resumed = BucketBatchSampler(KEYS, 4, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(state["epoch"])  # what a training loop does at the top of the resumed epoch: keeps position
    rest = list(resumed)
    if state["epoch"] == 0:
        rest += list(resumed)
    assert seen + rest == stream


def test_state_from_the_training_loop_and_mismatch_refusal():
    sampler = BucketBatchSampler(KEYS, 4, seed=5)
    state = sampler.state_dict(epoch=3, batches_done=2)  # what the loop counted (workers may prefetch)
    resumed = BucketBatchSampler(KEYS, 4, seed=5)
    resumed.load_state_dict(state)
    assert list(resumed) == [x.tolist() for x in sampler.epoch_batches(3)[2:]]
    assert sampler.state_dict(epoch=3, batches_done=len(sampler))["epoch"] == 4  # a finished epoch
    with pytest.raises(ValueError, match="seed"):
        BucketBatchSampler(KEYS, 4, seed=6).load_state_dict(state)
    with pytest.raises(ValueError, match="fingerprint"):
        BucketBatchSampler(KEYS[::-1], 4, seed=5).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 4])
def test_shards_concatenate_to_the_global_batch(world_size):
    single = BucketBatchSampler(KEYS, 8, seed=2)
    ranks = [BucketBatchSampler(KEYS, 8, seed=2, rank=r, world_size=world_size) for r in range(world_size)]
    for batch, *parts in zip(single, *ranks, strict=True):
        assert len(parts) == world_size and all(len(p) == 8 // world_size for p in parts)
        assert sum(parts, []) == batch
        assert [shard(batch, r, world_size) for r in range(world_size)] == parts
    with pytest.raises(ValueError):
        shard([1, 2, 3], 0, 2)


def test_per_sample_random_streams_are_deterministic():
    assert sample_rng(1, 2, 3, 0).random() == sample_rng(1, 2, 3, 0).random()
    assert sample_rng(1, 2, 3, 0).random() != sample_rng(1, 2, 4, 0).random()
    g1, g2 = sample_generator(1, 2, 3, 2), sample_generator(1, 2, 3, 2)
    assert torch.equal(torch.randn(4, generator=g1), torch.randn(4, generator=g2))
    assert not torch.equal(torch.randn(4, generator=sample_generator(1, 3, 3, 2)), torch.randn(4, generator=g1))
