"""Image-caption data from what users have: a folder of images with same-name `.txt` captions, or a manifest.

Sources (`load_index`):
- a folder: every image (recursively, hidden files skipped) with a same-name `.txt` caption next to it; a folder
  holding `metadata.jsonl`, `metadata.csv` or `metadata.json` is read through that manifest instead;
- a manifest: JSONL (one object a line), CSV (a header row) or JSON (a list of objects) with `path`, `caption`
  and optionally `long_caption`, `width`, `height`. Paths are relative to the manifest's folder. The reference's
  field names are accepted too (`prompt`, `sharegpt4v`), and `file_name` (Hugging Face image folders).

Image sizes come from the manifest or, when absent, from the file header (PIL reads it without decoding).

Bad samples never stop a run. At index time a missing file, a zero-byte file, a missing or empty caption, an
unreadable header or a malformed manifest row is skipped and counted in `DataIndex.skipped`. At load time an
image that fails to decode is replaced by another sample of the same bucket, chosen from (seed, epoch, index), so
every process and every resumed run substitutes the same way; the dataset counts these in `substitutions`.

Captions: with `long_caption_ratio` = p, a sample that has a long caption uses it with probability p (the
reference mixes prompt and ShareGPT4V captions 50/50), drawn from (seed, epoch, index). Caption dropout to the
null embedding (10%) is not done here: it is the model's `drop_caption` argument.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from pixart.data.buckets import closest_bucket, normalise_bins, resample_name
from pixart.data.sampler import STREAM_CAPTION, STREAM_SUBSTITUTE, sample_rng
from pixart.data.transforms import load_pixels

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MANIFEST_NAMES = ("metadata.jsonl", "metadata.csv", "metadata.json")
_FIELDS = {  # our name -> accepted manifest column names, first found wins
    "path": ("path", "file_name", "image"),
    "caption": ("caption", "prompt", "text"),
    "long_caption": ("long_caption", "sharegpt4v"),
}
_EXAMPLES = 5  # bad files named per reason in the log; the rest are counted


# ---- the index: which samples exist ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One usable sample: an image file, its caption(s) and its size in pixels."""

    path: str  # absolute path of the image
    name: str  # path relative to the data root (POSIX); the sample's identity in a feature cache
    caption: str
    long_caption: str | None
    height: int
    width: int
    file_size: int


@dataclass
class DataIndex:
    """The usable samples of a source and what was skipped, counted by reason."""

    root: str
    records: list[Record]
    skipped: Counter = field(default_factory=Counter)
    source: str = "folder"  # folder | jsonl | csv | json

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"{len(self.records)} samples from {self.root} ({self.source}); skipped: {reasons}"


class _Skips:
    """Counts skipped samples and logs the first few of each reason."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def __call__(self, reason: str, what: str) -> None:
        self.counts[reason] += 1
        level = logging.WARNING if self.counts[reason] <= _EXAMPLES else logging.DEBUG
        logger.log(level, "skipping %s: %s", what, reason.replace("_", " "))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int_or_none(value: Any) -> int | None:
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _header_size(path: str) -> tuple[int, int] | None:
    """(height, width) from the file header, or None if PIL cannot identify the file."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # any failure to parse a header means "unreadable", never a crash
        return None
    return (height, width) if width > 0 and height > 0 else None


def _make_record(
    path: Path, name: str, caption: Any, long_caption: Any, height: Any, width: Any, skip: _Skips
) -> Record | None:
    """Validate one candidate sample cheaply (stat, caption, header); None and a counted skip if unusable."""
    size = path.stat().st_size if path.is_file() else -1
    caption = _text(caption)
    h, w = _int_or_none(height), _int_or_none(width)
    if size < 0:
        reason = "missing_file"
    elif size == 0:
        reason = "empty_file"
    elif caption is None:
        reason = "missing_caption"
    elif h is None or w is None:
        hw = _header_size(str(path))
        reason = "unreadable" if hw is None else None
        h, w = hw or (None, None)
    else:
        reason = None
    if reason is not None:
        skip(reason, name)
        return None
    return Record(str(path), name, caption, _text(long_caption), h, w, size)


def scan_folder(root: str | os.PathLike[str]) -> DataIndex:
    """Every image under `root` (recursive, sorted) with its same-name `.txt` caption."""
    root = Path(root).resolve()
    skip, records = _Skips(), []
    files = sorted(
        (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    for path in files:
        name = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in Path(name).parts):
            continue  # hidden files and folders, e.g. temp files of an interrupted export
        caption_file = path.with_suffix(".txt")
        caption = None
        if caption_file.is_file():
            try:
                caption = caption_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                caption = None
        record = _make_record(path, name, caption, None, None, None, skip)
        if record is not None:
            records.append(record)
    return DataIndex(str(root), records, skip.counts, "folder")


def _manifest_rows(path: Path, skip: _Skips) -> tuple[list[dict], str]:
    kind = path.suffix.lower().lstrip(".")
    if kind == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not any(c in reader.fieldnames for c in _FIELDS["path"]):
                raise ValueError(f"{path}: the CSV header must name a 'path' column, got {reader.fieldnames}")
            return list(reader), kind
    if kind == "json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: a .json manifest must hold a list of objects")
        return rows, kind
    if kind != "jsonl":
        raise ValueError(f"{path}: a manifest must be .jsonl, .csv or .json")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                skip("bad_record", f"{path.name} line {number}")
                rows.append(None)  # keeps row numbers meaningful in later messages
    return rows, kind


def read_manifest(path: str | os.PathLike[str]) -> DataIndex:
    """Samples listed in a JSONL / CSV / JSON manifest; paths are relative to the manifest's folder."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    root, skip, records = path.parent, _Skips(), []
    rows, kind = _manifest_rows(path, skip)
    for number, row in enumerate(rows, 1):
        if row is None:
            continue
        if not isinstance(row, dict):
            skip("bad_record", f"{path.name} row {number} (not an object)")
            continue
        get = {k: next((row[c] for c in names if c in row), None) for k, names in _FIELDS.items()}
        if not _text(get["path"]):
            skip("bad_record", f"{path.name} row {number} (no path)")
            continue
        file = Path(str(get["path"]).strip())
        file = file if file.is_absolute() else root / file
        name = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.as_posix()
        record = _make_record(
            file, name, get["caption"], get["long_caption"], row.get("height"), row.get("width"), skip
        )
        if record is not None:
            records.append(record)
    return DataIndex(str(root), records, skip.counts, kind)


def load_index(source: str | os.PathLike[str]) -> DataIndex:
    """Records of a manifest file or an image folder (through its metadata.* manifest if it has one)."""
    source = Path(source)
    if source.is_file():
        index = read_manifest(source)
    elif source.is_dir():
        manifest = next((source / n for n in MANIFEST_NAMES if (source / n).is_file()), None)
        if manifest is not None:
            logger.info("reading %s (remove it to index the folder's .txt captions instead)", manifest)
        index = read_manifest(manifest) if manifest is not None else scan_folder(source)
    else:
        raise FileNotFoundError(f"no image folder or manifest at {source}")
    logger.info("data: %s", index.summary())
    return index


# ---- captions ------------------------------------------------------------------------------------------------


def use_long_caption(has_long: bool, ratio: float, seed: int, epoch: int, index: int) -> bool:
    """Whether sample `index` uses its long caption this epoch: probability `ratio`, fixed by (seed, epoch, index)."""
    if not has_long or ratio <= 0:
        return False
    return ratio >= 1 or bool(sample_rng(seed, epoch, index, STREAM_CAPTION).random() < ratio)


def _check_ratio(ratio: float) -> float:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"long_caption_ratio must be in [0, 1], got {ratio}")
    return float(ratio)


def aspect_value(key: str, size: tuple[int, int]) -> float:
    """The bucket's aspect-ratio number for micro-conditioning: its key as a float (reference), else H / W."""
    try:
        return float(key)
    except ValueError:
        return size[0] / size[1]


# ---- the raw-image dataset -------------------------------------------------------------------------------------


class ImageCaptionDataset(Dataset):
    """Images resized and cropped to their aspect-ratio bucket, with a caption string.

    Args:
        data: an image folder, a manifest path, or a `DataIndex`.
        bins: bucket table {ratio key: (H, W)} (`buckets.bins_for(1024)`, `buckets.fixed_bins(512, 512)`).
        long_caption_ratio: probability of using a sample's long caption when it has one.
        seed: base seed of caption choice and bad-image substitution.
        resample: "bicubic" | "lanczos" | "bilinear"; default as the reference (LANCZOS from 2048 up).

    A sample is {"pixels": (3, H, W) float in [-1, 1], "caption": str, "bucket": key, "size": (H, W),
    "orig_size": (h, w), "index": int (the sample actually loaded), "substituted": bool, "long": bool}.
    Call `set_epoch(e)` with the sampler's; DataLoader workers copy the dataset when an epoch's iterator is made,
    so do not use `persistent_workers=True`.
    """

    def __init__(
        self,
        data: str | os.PathLike[str] | DataIndex,
        bins: Mapping[str, Sequence[int]],
        *,
        long_caption_ratio: float = 0.5,
        seed: int = 0,
        resample: str | None = None,
    ) -> None:
        self.index = data if isinstance(data, DataIndex) else load_index(data)
        self.records = self.index.records
        self.bins = normalise_bins(bins)
        self.resample = resample or resample_name(self.bins)
        self.long_caption_ratio, self.seed, self.epoch = _check_ratio(long_caption_ratio), int(seed), 0
        self._buckets = [closest_bucket(r.height, r.width, self.bins) for r in self.records]
        self._members: dict[str, list[int]] = {}
        for i, key in enumerate(self._buckets):
            self._members.setdefault(key, []).append(i)
        self.skipped = self.index.skipped  # index-time skips by reason
        self.bad_files: set[str] = set()  # images that failed to decode in this process
        self.substitutions = 0  # load-time substitutions this epoch (this process)
        self.substitutions_total = 0

    def __len__(self) -> int:
        return len(self.records)

    def bucket_keys(self) -> list[str]:
        """The bucket of every sample, for `BucketBatchSampler`."""
        return list(self._buckets)

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"epoch {self.epoch}: {len(self)} samples in {len(self._members)} buckets; skipped when indexing: "
            f"{reasons}; unreadable images: {len(self.bad_files)}, substituted this epoch: {self.substitutions}"
        )

    def set_epoch(self, epoch: int) -> None:
        """Log the finished epoch's summary and start counting `epoch`."""
        if int(epoch) != self.epoch:
            logger.info("data %s", self.summary())
            self.epoch, self.substitutions = int(epoch), 0

    def _candidates(self, index: int) -> Iterator[int]:
        """Stand-ins for a bad sample: the rest of its bucket from a seeded offset, then every other sample."""
        key = self._buckets[index]
        members = self._members[key]
        start = int(sample_rng(self.seed, self.epoch, index, STREAM_SUBSTITUTE).integers(len(members)))
        rotated = (members[(start + k) % len(members)] for k in range(len(members)))
        yield from (j for j in rotated if j != index)
        yield from (j for j in range(len(self.records)) if self._buckets[j] != key)

    def _pixels(self, index: int, size: tuple[int, int]) -> Tensor | None:
        record = self.records[index]
        if record.path in self.bad_files:
            return None
        try:
            return load_pixels(record.path, size, self.resample)
        except Exception as e:  # a corrupt file of any kind is skipped, never fatal
            self.bad_files.add(record.path)
            logger.warning("unreadable image %s (%s: %s); using another sample", record.name, type(e).__name__, e)
            return None

    def __getitem__(self, index: int) -> dict[str, Any]:
        key = self._buckets[index]
        size = self.bins[key]
        used, pixels = index, self._pixels(index, size)
        if pixels is None:
            self.substitutions += 1
            self.substitutions_total += 1
            for used in self._candidates(index):
                pixels = self._pixels(used, size)  # cropped to this sample's bucket, so the batch still stacks
                if pixels is not None:
                    break
            else:
                raise RuntimeError(f"no image of {self.index.root} could be decoded")
        record = self.records[used]
        long = use_long_caption(record.long_caption is not None, self.long_caption_ratio, self.seed, self.epoch, used)
        return {
            "pixels": pixels,
            "caption": record.long_caption if long else record.caption,
            "bucket": key,
            "size": size,
            "orig_size": (record.height, record.width),
            "index": used,
            "substituted": used != index,
            "long": long,
        }


def _common_bucket(samples: Sequence[Mapping[str, Any]]) -> tuple[str, tuple[int, int]]:
    keys = {s["bucket"] for s in samples}
    if len(keys) != 1:
        raise ValueError(f"a batch must come from one bucket, got {sorted(keys)}; use BucketBatchSampler")
    return samples[0]["bucket"], tuple(samples[0]["size"])


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack raw samples of one bucket.

    Returns: {"pixels": (B, 3, H, W), "caption": list[str], "bucket": key, "size": (H, W),
    "resolution": (B, 2) float original (h, w), "aspect_ratio": (B, 1) float, "index": (B,) long,
    "substituted": int (samples replaced because their image failed to decode), "long": (B,) bool}.
    """
    key, size = _common_bucket(samples)
    return {
        "pixels": torch.stack([s["pixels"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "bucket": key,
        "size": size,
        "resolution": torch.tensor([s["orig_size"] for s in samples], dtype=torch.float32),
        "aspect_ratio": torch.full((len(samples), 1), aspect_value(key, size)),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "substituted": sum(bool(s["substituted"]) for s in samples),
        "long": torch.tensor([bool(s["long"]) for s in samples]),
    }
