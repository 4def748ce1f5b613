"""Several feature caches trained on as one (`MixedCachedDataset`, data.mix): index space, repeats, refusals."""

from __future__ import annotations

import pytest
import torch
from test_cache import FakeEncoders, make_data, prepare

from pixart.data.cache_read import CachedDataset, MixedCachedDataset
from pixart.data.sampler import BucketBatchSampler
from pixart.train.config import load_train_config
from pixart.train.loop import build_dataset


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    prepare(make_data(root / "data-a", n=7), root / "a")
    prepare(make_data(root / "data-b", n=4), root / "b")
    return root / "a", root / "b"


def test_parts_follow_each_other_with_repeats(caches):
    a, b = (CachedDataset(c, long_caption_ratio=0.5, seed=3) for c in caches)
    mix = MixedCachedDataset([(a, 1), (b, 2)])
    assert len(mix) == 7 + 2 * 4
    assert mix.bucket_keys() == a.bucket_keys() + b.bucket_keys() * 2
    # Sample 0 is a's first; 7 and 11 are b's first, once in each copy: the same image with its own noise
    assert torch.equal(mix[0]["latent"], a[0]["latent"])
    first, again = mix[7], mix[11]
    assert first["bucket"] == again["bucket"] == b[0]["bucket"] and first["index"] == 7 and again["index"] == 11
    assert not torch.equal(first["latent"], again["latent"])
    assert torch.allclose(first["latent"], again["latent"], atol=0.5)  # one posterior, two draws
    assert torch.equal(mix[7]["latent"], first["latent"])  # deterministic
    mix.set_epoch(1)
    assert not torch.equal(mix[7]["latent"], first["latent"]) and b.epoch == 1
    with pytest.raises(IndexError, match="out of range"):
        mix[len(mix)]
    batches = BucketBatchSampler(mix.bucket_keys(), 2, seed=0).epoch_batches(0)
    assert {int(i) for batch in batches for i in batch} == set(range(len(mix)))  # every sample, some twice (padding)


def test_caches_of_other_encoders_are_refused(caches, tmp_path):
    other = tmp_path / "other"
    prepare(make_data(tmp_path / "data"), other, FakeEncoders(text_sha="another-t5"))
    with pytest.raises(ValueError, match="differ in their text encoder"):
        MixedCachedDataset([(CachedDataset(caches[0]), 1), (CachedDataset(other), 1)])
    with pytest.raises(ValueError, match="repeats=0"):
        MixedCachedDataset([(CachedDataset(caches[0]), 0)])


def test_the_loop_reads_data_mix(caches):
    a, b = caches
    mix = [f'data.mix=["{b}"]', "data.mix_repeats=[3]"]
    cfg = load_train_config(None, [f"data.cache={a}", *mix, "data.max_tokens=8"])
    dataset, _ = build_dataset(cfg, None)
    assert isinstance(dataset, MixedCachedDataset) and len(dataset) == 7 + 3 * 4
    cfg = load_train_config(None, [f"data.cache={a}", "data.max_tokens=8"])
    assert len(build_dataset(cfg, None)[0]) == 7
