"""Feature cache with stand-in encoders: round trip, resume after interruption, idempotence, refusals, sampling."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from test_dataset import write_image, write_truncated_png
from torch.utils.data import DataLoader

from pixart.data.cache import prepare_cache
from pixart.data.cache_read import INDEX, CachedDataset, collate_cached, read_index, read_null_caption
from pixart.data.dataset import load_index
from pixart.data.sampler import STREAM_NOISE, BucketBatchSampler, sample_generator
from pixart.data.transforms import load_pixels

BINS = {"0.5": (16, 32), "1.0": (24, 24), "2.0": (32, 16)}
L, D = 8, 6  # token length and feature width of the stand-in text encoder


class FakeEncoders:
    """Deterministic, cheap encoders with the real interface: features depend on the text, latents on pixels."""

    def __init__(self, text_sha: str = "t5-config", vae_sha: str = "vae-config", fail_after: int | None = None):
        self.identity = {
            "text_encoder": {"path": "/models/t5", "config_sha256": text_sha},
            "vae": {"path": "/models/vae", "config_sha256": vae_sha, "scaling_factor": 0.5, "shift_factor": 0.0},
        }
        self.image_calls = self.text_calls = 0
        self.fail_after = fail_after  # raise on this image call, like a process killed mid-run

    def encode_text(self, texts):
        self.text_calls += 1
        return fake_text(texts)

    def encode_images(self, pixels):
        if self.fail_after is not None and self.image_calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.image_calls += 1
        return fake_latents(pixels)


def fake_text(texts):
    lengths = [min(L, len(t.split()) + 1) for t in texts]  # words + EOS
    features = torch.zeros(len(texts), L, D)
    for i, t in enumerate(texts):
        g = torch.Generator().manual_seed(sum(map(ord, t)))
        features[i] = torch.randn(L, D, generator=g)  # padded positions too, as T5 gives: trimmed when stored
    mask = (torch.arange(L)[None] < torch.tensor(lengths)[:, None]).long()
    return features, mask


def fake_latents(pixels):
    pooled = F.avg_pool2d(pixels, 8)  # (B, 3, h, w)
    mean = torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)  # (B, 4, h, w)
    return mean, 0.1 + 0.05 * mean.abs()


def make_data(root: Path, n: int = 7) -> Path:
    sizes = [(40, 20), (20, 40), (30, 30)]
    rows = []
    for i in range(n):
        w, h = sizes[i % 3]
        write_image(root / f"{i:03d}.png", w, h, seed=i)
        row = {"path": f"{i:03d}.png", "caption": f"image number {i}"}
        if i % 2 == 0:
            row["long_caption"] = f"a much longer caption describing image number {i} in detail"
        rows.append(row)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def prepare(data, cache, encoders=None, **kw):
    kw = {"bins": BINS, "max_tokens": L, "shard_size": 3, "batch_size": 2, "workers": 2, **kw}
    return prepare_cache(data, cache, encoders or FakeEncoders(), **kw)


def snapshot(cache: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in cache.iterdir() if p.name != ".lock"}


@pytest.fixture
def data(tmp_path):
    return make_data(tmp_path / "data")


# ---- writing ---------------------------------------------------------------------------------------------------


def test_round_trip(data, tmp_path):
    summary = prepare(data, tmp_path / "cache")
    assert (summary.samples, summary.shards, summary.written, summary.reused) == (7, 3, 3, 0)
    ds = CachedDataset(tmp_path / "cache", long_caption_ratio=0.0, seed=0)
    index = load_index(data)
    assert len(ds) == 7 and ds.bucket_keys() == ["0.5", "2.0", "1.0"] * 2 + ["0.5"]
    for i in (0, 4):
        record, sample = index.records[i], ds[i]
        mean, std = fake_latents(load_pixels(record.path, sample["size"])[None])
        eps = torch.randn(mean.shape[1:], generator=sample_generator(0, 0, i, STREAM_NOISE))
        expected = 0.5 * (mean[0] + std[0] * eps)
        assert sample["latent"].shape == (4, *(s // 8 for s in sample["size"]))
        assert torch.allclose(sample["latent"], expected, atol=2e-3)  # stored in float16
        features, mask = fake_text([record.caption])
        n = int(mask.sum())
        assert sample["caption"].shape == (L, D) and sample["caption_mask"].dtype == torch.bool
        assert torch.equal(sample["caption_mask"], mask[0].bool())
        assert torch.allclose(sample["caption"][:n], features[0, :n], atol=2e-3)
        assert not sample["caption"][n:].any()  # padding is zeros (masked out anyway)
        assert sample["orig_size"] == (record.height, record.width) and not sample["long"]
    with safe_open(str(tmp_path / "cache" / ds.shard_files[0]), framework="pt") as f:
        assert f.get_tensor("0.text").shape == (4, D) and f.get_tensor("0.mean").dtype == torch.float16  # trimmed
        assert "0.long" in f.keys() and "1.long" not in f.keys()  # noqa: SIM118 (not a dict)
    assert torch.equal(read_null_caption(tmp_path / "cache"), fake_text([""])[0][0])  # T5(""), for caption dropout


def test_long_captions_and_latent_sampling_are_seeded(data, tmp_path):
    prepare(data, tmp_path / "cache")
    always = CachedDataset(tmp_path / "cache", long_caption_ratio=1.0)
    long_features, _ = fake_text([load_index(data).records[0].long_caption])
    assert always[0]["long"] and torch.allclose(always[0]["caption"][:L], long_features[0], atol=2e-3)
    assert not always[1]["long"]  # no long caption: the short one
    a, b = CachedDataset(tmp_path / "cache", seed=1), CachedDataset(tmp_path / "cache", seed=1)
    assert torch.equal(a[3]["latent"], b[3]["latent"])
    first = a[3]["latent"]
    a.set_epoch(1)
    assert not torch.equal(a[3]["latent"], first)  # a fresh draw each epoch...
    b.set_epoch(1)
    assert torch.equal(a[3]["latent"], b[3]["latent"])  # ...the same in every process and resumed run
    assert not torch.equal(CachedDataset(tmp_path / "cache", seed=2)[3]["latent"], first)


def test_resumable_after_deleted_shard_and_leftover_temp_file(data, tmp_path):
    cache = tmp_path / "cache"
    prepare(data, cache)
    before = CachedDataset(cache)
    reference = [before[i] for i in range(len(before))]
    (cache / before.shard_files[1]).unlink()
    (cache / f".{before.shard_files[2]}.999.tmp").write_bytes(b"half a shard")
    encoders = FakeEncoders()
    summary = prepare(data, cache, encoders)
    assert (summary.written, summary.reused) == (1, 2) and encoders.image_calls > 0
    assert not list(cache.glob(".*.tmp"))
    after = CachedDataset(cache)
    for x, y in zip(reference, (after[i] for i in range(len(after))), strict=True):
        assert torch.equal(x["latent"], y["latent"]) and torch.equal(x["caption"], y["caption"])


def test_interrupted_run_leaves_only_complete_shards(data, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        prepare(data, cache, FakeEncoders(fail_after=3))  # dies inside the second shard
    shards = sorted(cache.glob("shard-*.safetensors"))
    assert len(shards) == 1 and not read_index(cache)["complete"]
    with pytest.raises(ValueError, match="incomplete"):
        CachedDataset(cache)
    summary = prepare(data, cache)
    assert (summary.written, summary.reused, summary.samples) == (2, 1, 7)
    assert len(CachedDataset(cache)) == 7


def test_second_run_does_nothing(data, tmp_path):
    cache = tmp_path / "cache"
    prepare(data, cache)
    before = snapshot(cache)
    encoders = FakeEncoders()
    summary = prepare(data, cache, encoders)
    assert (summary.written, summary.reused) == (0, 3)
    assert encoders.image_calls == encoders.text_calls == 0 and snapshot(cache) == before


def test_changed_caption_reencodes_only_its_shard(data, tmp_path):
    cache = tmp_path / "cache"
    prepare(data, cache)
    old = set(p.name for p in cache.glob("shard-*"))
    lines = (data / "metadata.jsonl").read_text().splitlines()
    lines[4] = json.dumps({"path": "004.png", "caption": "a new caption"})
    (data / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    summary = prepare(data, cache)
    new = set(p.name for p in cache.glob("shard-*"))
    assert summary.written == 1 and len(new) == 3 and len(old & new) == 2  # the stale shard is removed
    features, mask = fake_text(["a new caption"])
    sample = CachedDataset(cache, long_caption_ratio=0.0)[4]
    assert torch.allclose(sample["caption"][: int(mask.sum())], features[0, : int(mask.sum())], atol=2e-3)


def test_refuses_other_encoders_and_buckets(data, tmp_path, caplog):
    cache = tmp_path / "cache"
    prepare(data, cache)
    with pytest.raises(ValueError, match="text_encoder"):
        prepare(data, cache, FakeEncoders(text_sha="another-t5"))
    with pytest.raises(ValueError, match="vae"):
        prepare(data, cache, FakeEncoders(vae_sha="another-vae"))
    with pytest.raises(ValueError, match="bins"):
        prepare(data, cache, bins={"1.0": (24, 24)})
    with pytest.raises(ValueError, match="max_tokens"):
        prepare(data, cache, max_tokens=L + 1)
    moved = FakeEncoders()
    moved.identity["vae"]["path"] = "/elsewhere/vae"
    with caplog.at_level(logging.WARNING):
        assert prepare(data, cache, moved).written == 0  # same config, moved folder: reused, with a warning
    assert "moved" in caplog.text


def test_bad_images_are_skipped_and_counted(data, tmp_path):
    write_truncated_png(data / "007.png", 40, 20)
    (data / "008.png").write_bytes(b"")
    with open(data / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"path": "007.png", "caption": "truncated"}) + "\n")
        f.write(json.dumps({"path": "008.png", "caption": "empty"}) + "\n")
    summary = prepare(data, tmp_path / "cache")
    assert summary.samples == 7 and summary.skipped == {"empty_file": 1, "unreadable": 1}
    ds = CachedDataset(tmp_path / "cache")
    assert len(ds) == 7 and dict(ds.skipped) == {"empty_file": 1, "unreadable": 1}
    assert "unreadable=1" in ds.summary()
    assert prepare(data, tmp_path / "cache").written == 0  # a skipped sample does not make its shard "incomplete"


def test_loader_batches_and_reading_options(data, tmp_path):
    prepare(data, tmp_path / "cache")
    ds = CachedDataset(tmp_path / "cache", max_tokens=12, dtype=torch.float16)
    sampler = BucketBatchSampler(ds.bucket_keys(), 2, seed=0)
    for batch in DataLoader(ds, batch_sampler=sampler, collate_fn=collate_cached):
        h, w = BINS[batch["bucket"]]
        assert batch["latent"].shape == (2, 4, h // 8, w // 8) and batch["latent"].dtype == torch.float32
        assert batch["caption"].shape == (2, 12, D) and batch["caption"].dtype == torch.float16
        assert batch["caption_mask"].shape == (2, 12) and not batch["caption_mask"][:, L:].any()
        assert batch["resolution"].shape == (2, 2) and batch["aspect_ratio"].shape == (2, 1)
    assert pickle.loads(pickle.dumps(ds))[0]["latent"].shape == ds[0]["latent"].shape  # workers get a copy
    with pytest.raises(ValueError, match="shorter"):
        CachedDataset(tmp_path / "cache", max_tokens=L - 1)
    with pytest.raises(FileNotFoundError):
        CachedDataset(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / INDEX).write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a"):
        CachedDataset(tmp_path / "other")
