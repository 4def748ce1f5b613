"""Feature cache: T5 caption features and VAE latent mean/std, computed once (`pixart prepare`), read by training.

Training from the cache needs neither T5 (4.7B parameters) nor the VAE encoder in memory, which is what the
reference's maintainers advise for speed (REFERENCE.md §1.8, PixArt-sigma#54).

Layout of a cache folder:
    index.json                          settings (encoders, bucket table, max_tokens) and every sample's place
    shard-00000-<digest>.safetensors    up to `shard_size` samples; per row r:
        r.mean, r.std      (4, H/8, W/8) float16: VAE posterior mean and std at the sample's bucket size
        r.text, r.text_mask            (n, D) float16 / (n,) bool: T5 features of the caption, trimmed after
                                       the last real token (n <= max_tokens); padded back when read
        r.long, r.long_mask            the same for the long caption, when the sample has one
    The shard's metadata holds its digest and its rows (name, bucket, size) and the samples it skipped.
    null_caption.safetensors            "features" (max_tokens, D) float32 and "mask" (max_tokens,): T5("") padded,
                                       the null caption training puts in place of a dropped caption

A shard's name carries a digest of everything that determines its content (settings + its samples' names,
captions, sizes), so a complete shard is reused and a stale one never is. Each shard is written to a temporary
file, fsynced and renamed into place: an interrupted run (even kill -9) leaves complete shards or none, and the
next run redoes only the missing ones. `index.json` is written last; a second run with the same data writes
nothing. A cache made with other encoders (config hash), another bucket table or token length is refused.
Training reads a cache through `pixart.data.cache_read`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from pixart.data.buckets import closest_bucket, normalise_bins, resample_name
from pixart.data.cache_read import FORMAT, INDEX, NULL_CAPTION, read_index
from pixart.data.dataset import (
    DataIndex,
    Record,
    load_index,
)
from pixart.data.transforms import load_pixels

logger = logging.getLogger(__name__)

STORE_DTYPE = torch.float16  # as the reference's extracted features; halves the cache
_VOLATILE_CONFIG_KEYS = {"_name_or_path", "_commit_hash", "transformers_version", "_diffusers_version", "torch_dtype"}
_VOLATILE_CONFIG_KEYS |= {"dtype", "_use_default_values"}


# ---- encoders ----------------------------------------------------------------------------------------------------


class FeatureEncoders(Protocol):
    """What `prepare_cache` needs: caption and image encoders and a description of them."""

    identity: dict[str, Any]  # {"text_encoder": {...}, "vae": {...}}; compared between runs

    def encode_text(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Captions -> features (B, L, D) and mask (B, L), 1 = real token."""
        ...

    def encode_images(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) in [-1, 1] -> latent posterior mean and std, (B, C, H/8, W/8) each."""
        ...


def config_digest(config_file: str | os.PathLike[str]) -> str:
    """sha256 of a model's config.json with bookkeeping keys (versions, paths, load dtype) left out."""
    config = json.loads(Path(config_file).read_text(encoding="utf-8"))
    config = {k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


class T5AndVAE:
    """The encoders of PixArt-Σ from local folders: `pixart.text.TextEncoder` and `pixart.vae.VAE`.

    The identity (paths, config hashes, VAE scaling) is read from the config files at once; the weights load on
    the first encode, so a run that finds the cache complete never loads them. The VAE runs in float32 when
    asked for float16 but its config says `force_upcast` (the original SDXL VAE overflows in float16).
    """

    def __init__(
        self,
        text_encoder: str | os.PathLike[str],
        vae: str | os.PathLike[str],
        *,
        max_tokens: int = 300,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        from pixart.text import resolve_text_folders
        from pixart.vae import SDXL_SCALING_FACTOR, resolve_vae_folder

        _, encoder_dir = resolve_text_folders(text_encoder)
        if not (encoder_dir / "config.json").is_file():
            raise FileNotFoundError(f"text encoder folder {str(encoder_dir)!r} has no config.json")
        vae_dir = resolve_vae_folder(vae)
        vae_config = json.loads((vae_dir / "config.json").read_text(encoding="utf-8"))
        self.text_encoder_path, self.vae_path = Path(text_encoder), vae_dir
        self.max_tokens, self.device, self.dtype = max_tokens, torch.device(device), dtype
        self.identity = {
            "text_encoder": {
                "path": str(encoder_dir.resolve()),
                "config_sha256": config_digest(encoder_dir / "config.json"),
            },
            "vae": {
                "path": str(vae_dir.resolve()),
                "config_sha256": config_digest(vae_dir / "config.json"),
                "scaling_factor": float(vae_config.get("scaling_factor", SDXL_SCALING_FACTOR)),  # as pixart.vae
                "shift_factor": float(vae_config.get("shift_factor") or 0.0),
            },
        }
        self._text = self._vae = None

    def _load(self) -> None:
        from pixart.text import TextEncoder
        from pixart.vae import VAE

        self._text = TextEncoder.from_folder(
            self.text_encoder_path, max_length=self.max_tokens, device=self.device, dtype=self.dtype
        )
        self._vae = VAE.from_folder(self.vae_path, device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        if self._text is None:
            self._load()
        return self._text.encode(texts)

    @torch.no_grad()
    def encode_images(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        if self._vae is None:
            self._load()
        dist = self._vae.model.encode(pixels.to(self._vae.device, self._vae.dtype)).latent_dist
        return dist.mean, dist.std


# ---- small file helpers --------------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace_atomically(tmp: Path, dst: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)
    _fsync_dir(dst.parent)


def _write_json(path: Path, data: dict) -> bool:
    """Write JSON atomically unless the file already holds exactly it; True if written."""
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    _replace_atomically(tmp, path)
    return True


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer per cache folder (advisory lock; a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(folder / ".lock", "a") as f:  # "a": taking the lock changes no file
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another `pixart prepare` is writing {folder}") from None
        yield


# ---- settings: what must match for two runs to share a cache ---------------------------------------------------


def _without_paths(settings: dict) -> dict:
    return {
        k: ({kk: vv for kk, vv in v.items() if kk != "path"} if isinstance(v, dict) else v)
        for k, v in settings.items()
    }


def check_settings(cache_dir: Path, settings: dict) -> None:
    """Refuse to add to a cache made with other encoders, buckets or token length; warn if only paths moved."""
    if not (cache_dir / INDEX).is_file():
        return
    old = read_index(cache_dir)["settings"]
    if _without_paths(old) != _without_paths(settings):
        changed = sorted(
            k for k in set(old) | set(settings) if _without_paths(old).get(k) != _without_paths(settings).get(k)
        )
        short = lambda v: repr(v) if len(repr(v)) <= 160 else repr(v)[:150] + " ..."
        details = "; ".join(f"{k}: cache has {short(old.get(k))}, this run {short(settings.get(k))}" for k in changed)
        raise ValueError(f"{cache_dir} was made with other settings ({details}); use another --cache folder")
    for k in ("text_encoder", "vae"):
        if old[k].get("path") != settings[k].get("path"):
            logger.warning(
                "%s moved: cache made from %s, now %s (same config)", k, old[k]["path"], settings[k]["path"]
            )


# ---- writing ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrepareSummary:
    cache_dir: str
    samples: int  # samples in the cache
    shards: int
    written: int  # shards encoded by this run
    reused: int  # shards found complete
    skipped: dict[str, int]  # samples left out, by reason (index time and decode errors)

    def __str__(self) -> str:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"{self.cache_dir}: {self.samples} samples in {self.shards} shards "
            f"({self.written} encoded now, {self.reused} already complete); skipped: {skipped}"
        )


def _shard_digest(settings_digest: str, rows: Sequence[tuple[Record, str]]) -> str:
    content = [[r.name, r.caption, r.long_caption, key, r.height, r.width, r.file_size] for r, key in rows]
    return hashlib.sha256((settings_digest + json.dumps(content, ensure_ascii=False)).encode()).hexdigest()


def _shard_meta(path: Path) -> dict[str, str] | None:
    """A shard file's metadata, or None if it is absent or unreadable."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception:  # a damaged file is re-encoded, whatever safetensors raises
        return None


def _trimmed(features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Drop the padding after the last real token: (L, D), (L,) -> (n, D), (n,), n >= 1."""
    real = mask.nonzero()
    n = int(real[-1]) + 1 if len(real) else 1
    return features[:n].to("cpu", STORE_DTYPE).clone(), mask[:n].to("cpu", torch.bool).clone()


def _encode_shard(
    rows: Sequence[tuple[int, Record, str]],
    encoders: FeatureEncoders,
    bins: Mapping[str, tuple[int, int]],
    resample: str,
    batch_size: int,
    pool: ThreadPoolExecutor,
) -> tuple[dict[str, Tensor], list[list], list[list]]:
    """Encode one shard: (tensors, kept rows [row, name, bucket, h, w, has_long], skipped rows [row, name, why])."""

    def load(item: tuple[int, Record, str]) -> Tensor | None:
        _, record, key = item
        try:
            return load_pixels(record.path, bins[key], resample)
        except Exception as e:  # any decode failure skips the sample, never the run
            logger.warning("skipping unreadable image %s (%s: %s)", record.name, type(e).__name__, e)
            return None

    tensors: dict[str, Tensor] = {}
    kept: list[tuple[int, Record, str]] = []
    skipped: list[list] = []
    by_bucket: dict[str, list[tuple[int, Record, str]]] = {}
    for item in rows:
        by_bucket.setdefault(item[2], []).append(item)
    for key in sorted(by_bucket):
        items = by_bucket[key]
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            loaded = list(pool.map(load, chunk))
            good = [(item, px) for item, px in zip(chunk, loaded, strict=True) if px is not None]
            skipped += [
                [row, record.name, "unreadable"]
                for (row, record, _), px in zip(chunk, loaded, strict=True)
                if px is None
            ]
            if not good:
                continue
            mean, std = encoders.encode_images(torch.stack([px for _, px in good]))  # (b, C, h, w) each
            _check_finite(mean, std, what=f"VAE latents of bucket {key}")
            for i, ((row, _, _), _) in enumerate(good):
                tensors[f"{row}.mean"] = mean[i].to("cpu", STORE_DTYPE).clone()
                tensors[f"{row}.std"] = std[i].to("cpu", STORE_DTYPE).clone()
            kept += [item for item, _ in good]

    texts = [(f"{row}.text", r.caption) for row, r, _ in kept]
    texts += [(f"{row}.long", r.long_caption) for row, r, _ in kept if r.long_caption is not None]
    texts.sort(key=lambda t: len(t[1]))  # similar lengths together
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        features, mask = encoders.encode_text([t for _, t in chunk])  # (b, L, D), (b, L)
        _check_finite(features, what="T5 features")
        for i, (name, _) in enumerate(chunk):
            tensors[name], tensors[f"{name}_mask"] = _trimmed(features[i], mask[i])
    kept_rows = [[row, r.name, key, r.height, r.width, r.long_caption is not None] for row, r, key in sorted(kept)]
    return tensors, kept_rows, skipped


def _check_finite(*tensors: Tensor, what: str) -> None:
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise ValueError(f"{what} hold inf/NaN; encode in float32 or bfloat16 (--dtype) instead")


def prepare_cache(
    data: str | os.PathLike[str] | DataIndex,
    cache_dir: str | os.PathLike[str],
    encoders: FeatureEncoders,
    *,
    bins: Mapping[str, Sequence[int]],
    max_tokens: int = 300,
    resample: str | None = None,
    shard_size: int = 512,
    batch_size: int = 8,
    workers: int = 4,
    progress: Callable[[list], Iterable] | None = None,
) -> PrepareSummary:
    """Encode every sample of `data` into `cache_dir`, skipping shards that are already complete.

    Args:
        data: an image folder, a manifest, or a `DataIndex`.
        encoders: a `FeatureEncoders` (e.g. `T5AndVAE`); its `identity` goes into the settings.
        bins: the bucket table; each image is encoded at its bucket's size.
        max_tokens: T5 token length the encoder pads/truncates to (recorded; readers pad back to it).
        shard_size: samples per shard file. batch_size: images / captions per encoder call.
        workers: threads decoding images. progress: e.g. `tqdm` to wrap the shard loop.

    Raises:
        ValueError: the cache holds features made with other settings, or an encoder produced inf/NaN.
    """
    if shard_size < 1 or batch_size < 1 or workers < 1:
        raise ValueError(f"shard_size, batch_size and workers must be >= 1, got {shard_size}, {batch_size}, {workers}")
    index = data if isinstance(data, DataIndex) else load_index(data)
    bins = normalise_bins(bins)
    resample = resample or resample_name(bins)
    settings = {
        "text_encoder": dict(encoders.identity["text_encoder"]),
        "vae": dict(encoders.identity["vae"]),
        "max_tokens": int(max_tokens),
        "bins": {k: list(v) for k, v in bins.items()},
        "resample": resample,
        "store_dtype": str(STORE_DTYPE).removeprefix("torch."),
    }
    settings_digest = hashlib.sha256(json.dumps(_without_paths(settings), sort_keys=True).encode()).hexdigest()
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    records = [(r, closest_bucket(r.height, r.width, bins)) for r in index.records]
    plan = []
    for number, start in enumerate(range(0, len(records), shard_size)):
        rows = records[start : start + shard_size]
        digest = _shard_digest(settings_digest, rows)
        plan.append((f"shard-{number:05d}-{digest[:12]}.safetensors", digest, rows))

    with _locked(cache):
        check_settings(cache, settings)
        for tmp in cache.glob(".*.tmp"):  # left by an interrupted run; we hold the lock, so no one writes them
            tmp.unlink()
        if not (cache / INDEX).is_file():  # record the settings first, so a partial cache is never mixed
            _write_json(cache / INDEX, {"format": FORMAT, "complete": False, "settings": settings, "shards": []})
        written, shards, skipped = 0, [], Counter(index.skipped)
        loop = progress(plan) if progress else plan
        with ThreadPoolExecutor(workers) as pool:
            for name, digest, rows in loop:
                path = cache / name
                meta = _shard_meta(path)
                if meta is None or meta.get("digest") != digest:
                    items = [(row, record, key) for row, (record, key) in enumerate(rows)]
                    tensors, kept, bad = _encode_shard(items, encoders, bins, resample, batch_size, pool)
                    meta = {"format": FORMAT, "digest": digest, "rows": json.dumps(kept), "skipped": json.dumps(bad)}
                    tmp = cache / f".{name}.{os.getpid()}.tmp"
                    _save_safetensors(tensors, tmp, meta)
                    _replace_atomically(tmp, path)
                    written += 1
                    logger.debug("wrote %s: %d samples, %d skipped", name, len(kept), len(bad))
                shards.append({"file": name, "rows": json.loads(meta["rows"])})
                skipped.update(reason for _, _, reason in json.loads(meta["skipped"]))
        if not (cache / NULL_CAPTION).is_file():  # same encoder as the shards: check_settings saw to that
            null, null_mask = encoders.encode_text([""])  # (1, L, D), (1, L)
            _check_finite(null, what="the null caption")
            tmp = cache / f".{NULL_CAPTION}.{os.getpid()}.tmp"
            _save_safetensors({"features": null[0].float().cpu(), "mask": null_mask[0].bool().cpu()}, tmp, {})
            _replace_atomically(tmp, cache / NULL_CAPTION)
        final = {
            "format": FORMAT,
            "complete": True,
            "settings": settings,
            "num_samples": sum(len(s["rows"]) for s in shards),
            "skipped": dict(sorted(skipped.items())),
            "shards": shards,
        }
        _write_json(cache / INDEX, final)
        keep = {s["file"] for s in shards}
        for stale in cache.glob("shard-*.safetensors"):
            if stale.name not in keep:
                logger.info("removing %s (its samples or settings changed)", stale.name)
                stale.unlink()
    return PrepareSummary(
        str(cache), final["num_samples"], len(shards), written, len(shards) - written, final["skipped"]
    )


def _save_safetensors(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
