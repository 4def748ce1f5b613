"""Raw checkpoint file I/O: read tensors safely, write them atomically. Knows files, not models.

- `.safetensors` is read with `safetensors` (no code can run on load).
- `.pth` / `.pt` / `.bin` / `.ckpt` are read only through `torch.load(weights_only=True)`: a file that needs
  arbitrary unpickling (a pickled argparse Namespace, a custom class) is refused, never executed.
- Writers go to a temporary path in the destination's directory and are renamed into place at the end, so a
  failure or an interrupt never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"  # diffusers' weights file name, before variant and extension

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_MAGIC = b"\x80"  # legacy torch.save: a raw pickle stream (protocol >= 2)

# safetensors dtype names -> torch dtypes (for shape-only "meta" reads).
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be read or does not fit the model; the message is one line."""


# ---- reading -------------------------------------------------------------------------------------------------------


def file_kind(path: Path) -> str:
    """'safetensors' or 'torch', from the suffix, else from the first bytes; CheckpointError otherwise."""
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        return "torch"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    raise CheckpointError(
        f"{path}: unknown checkpoint format; expected a .safetensors file, a PyTorch file "
        f"({', '.join(TORCH_SUFFIXES)}) or a diffusers folder with config.json"
    )


def read_safetensors(path: str | Path, *, meta: bool = False) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and string metadata of a `.safetensors` file.

    Args:
        meta: read only the header and return tensors on the meta device (shapes and dtypes, no data).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            if meta:
                tensors = {}
                for key in f.keys():
                    piece = f.get_slice(key)
                    dtype = _SAFETENSORS_DTYPES.get(piece.get_dtype(), torch.uint8)
                    tensors[key] = torch.empty(piece.get_shape(), dtype=dtype, device="meta")
            else:
                tensors = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as e:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    return tensors, metadata


def _refusal(path: Path, error: Exception) -> CheckpointError:
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    what = f" ({found.group(1)})" if found else ""
    return CheckpointError(
        f"{path}: refused to load: the file contains pickled Python objects{what} that safe loading "
        "(torch.load weights_only=True) does not allow, and it was not executed. If you trust the file, "
        "re-save only its tensors, e.g. as .safetensors, and load that"
    )


def read_torch(path: str | Path, *, meta: bool = False) -> object:
    """The object saved in a `.pth`/`.bin` file, through `torch.load(weights_only=True)` only.

    Args:
        meta: memory-map the file (zip format) instead of reading it all; for shape-only inspection.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    is_zip = head == _ZIP_MAGIC
    if not (is_zip or head.startswith(_PICKLE_MAGIC)):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unrecognised content, or the file is corrupt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=meta and is_zip)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise _refusal(path, e) from None
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch file ({_first_line(e)})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch file ({_first_line(e)})") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def unwrap_state_dict(obj: object, path: Path, *, ema: bool = False) -> dict[str, Tensor]:
    """The flat tensor dict inside a loaded torch file.

    Official training checkpoints are `{'state_dict': ..., 'state_dict_ema'?: ..., 'optimizer': ...}`; released
    ones hold only `state_dict`; others are a bare `{name: tensor}` dict. `ema=True` picks `state_dict_ema`.
    A file that holds only `state_dict_ema` is read from it.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    if ema:
        if "state_dict_ema" not in obj:
            raise CheckpointError(f"{path}: no 'state_dict_ema' entry (top-level keys: {sorted(map(str, obj))[:8]})")
        obj = obj["state_dict_ema"]
    elif "state_dict" in obj:
        if "state_dict_ema" in obj:
            logger.info("%s also holds EMA weights ('state_dict_ema'); pass ema=True (--ema) to load those", path)
        obj = obj["state_dict"]
    elif "state_dict_ema" in obj:
        logger.info("%s: loading 'state_dict_ema', the only state dict in the file", path)
        obj = obj["state_dict_ema"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: the state dict is a {type(obj).__name__}, not a dict of tensors")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{path}: no state dict found: {bad[0]!r} is a {type(obj[bad[0]]).__name__}, not a tensor "
            f"(top-level keys: {sorted(map(str, obj))[:8]})"
        )
    return obj


def load_state_dict_file(path: str | Path, *, ema: bool = False, meta: bool = False) -> dict[str, Tensor]:
    """All tensors of one weights file (`.safetensors`, `.pth`, `.pt`, `.bin`, `.ckpt`, a shard index), as stored.

    Args:
        ema: for official training checkpoints, read `state_dict_ema` instead of `state_dict`.
        meta: shapes and dtypes only (meta-device tensors), without reading the data where possible.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a weights file")
    return read_weights(path, ema=ema, meta=meta)[0]


def read_sharded(index_path: Path, *, meta: bool = False) -> dict[str, Tensor]:
    """Merge the shards listed in a `*.index.json` (`{"weight_map": {name: shard_file}}`)."""
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path}: not a shard index with a 'weight_map' ({_first_line(e)})") from None
    out: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index_path}: shard {shard!r} is missing")
        for key, value in load_state_dict_file(shard_path, meta=meta).items():
            if key in out:
                raise CheckpointError(f"{index_path}: key {key!r} is stored in more than one shard")
            out[key] = value
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise CheckpointError(f"{index_path}: {len(missing)} indexed keys are in no shard, e.g. {missing[:3]}")
    return out


# ---- locating the weights in folders --------------------------------------------------------------------------


def _diffusers_weight_candidates() -> list[tuple[str, str]]:
    """(file name, description) in order of preference: full precision first, safetensors before .bin."""
    names = []
    for variant in (None, "fp16", "bf16"):
        v = f".{variant}" if variant else ""
        for ext in ("safetensors", "bin"):
            label = f"{ext}{f' {variant} variant' if variant else ''}"
            names.append((f"{DIFFUSERS_WEIGHTS}{v}.{ext}", label))
            names.append((f"{DIFFUSERS_WEIGHTS}.{ext}.index{v}.json", f"sharded {label}"))
    return names


def locate_weights(path: Path) -> tuple[Path, Path | None, str]:
    """(weights file or shard index, diffusers config.json or None, description) for a file or folder."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        config = path.parent / "config.json"
        if path.name.startswith(DIFFUSERS_WEIGHTS) and config.is_file():
            return path, config, "file in a diffusers folder"
        return path, None, path.suffix.lstrip(".") or "file"
    detail = []
    if (path / "transformer" / "config.json").is_file():
        path, detail = path / "transformer", ["pipeline folder"]
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{path}: not a diffusers model folder (no config.json); pass a weights file, a transformer folder "
            "or a pipeline folder with transformer/"
        )
    for name, label in _diffusers_weight_candidates():
        if (path / name).is_file():
            return path / name, path / "config.json", ", ".join([*detail, label])
    raise CheckpointError(
        f"{path}: has config.json but no {DIFFUSERS_WEIGHTS} weights (.safetensors, .bin, sharded, fp16 or bf16)"
    )


def read_weights(weights: Path, *, ema: bool, meta: bool) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors as stored, and the safetensors metadata (empty for other kinds)."""
    if weights.name.endswith(".json"):
        return read_sharded(weights, meta=meta), {}
    if file_kind(weights) == "safetensors":
        return read_safetensors(weights, meta=meta)
    sd = unwrap_state_dict(read_torch(weights, meta=meta), weights, ema=ema)
    return ({k: v.to("meta") for k, v in sd.items()} if meta else sd), {}


def dtype_summary(sd: dict[str, Tensor]) -> str:
    """The floating dtypes in `sd`, most elements first: "float16", or "bfloat16 (+ float32)"."""
    counts = Counter()
    for t in sd.values():
        if t.is_floating_point():
            counts[str(t.dtype).removeprefix("torch.")] += t.numel()
    names = [name for name, _ in counts.most_common()]
    return names[0] + (f" (+ {', '.join(names[1:])})" if names[1:] else "") if names else "none"


# ---- writing -------------------------------------------------------------------------------------------------------


def fsync_path(path: Path) -> None:
    """Flush a file or folder to disk (a folder: so a rename inside it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(dst: Path, overwrite: bool, *, folder: bool = False) -> None:
    """Raise FileExistsError if `dst` exists and may not be replaced.

    Even with `overwrite`, a folder is never replaced by a file or the other way round, and only a folder that
    is empty or holds a `config.json` (a model folder) is replaced: a mistyped path must not delete a directory.
    """
    if not dst.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{dst} already exists; pass overwrite=True (CLI: --force) to replace it")
    if dst.is_dir() != folder:
        what = "a folder" if dst.is_dir() else "a file"
        raise FileExistsError(f"{dst} is {what}; refusing to replace it with {'a folder' if folder else 'a file'}")
    if folder and any(dst.iterdir()) and not (dst / "config.json").is_file():
        raise FileExistsError(f"{dst} is not a model folder (no config.json); refusing to replace it")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _swap_folder(new: Path, dst: Path) -> None:
    """Move folder `new` to `dst`; an existing `dst` is set aside first and restored if the move fails."""
    if not dst.exists():
        os.replace(new, dst)
        return
    old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.old-"))
    os.replace(dst, old / dst.name)
    try:
        os.replace(new, dst)
    except BaseException:
        os.replace(old / dst.name, dst)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(dst: str | Path, *, overwrite: bool, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `dst`; on success move it to `dst`, on any error delete it.

    Files are renamed with `os.replace` (atomic on POSIX). A folder that replaces an existing one is swapped
    in by two renames, with the old one deleted only after the new one is in place.
    """
    dst = Path(dst)
    check_writable(dst, overwrite, folder=folder)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.tmp-"))
    else:
        fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.tmp-")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        check_writable(dst, overwrite, folder=folder)  # something may have appeared meanwhile
        os.chmod(tmp, (0o777 if folder else 0o666) & ~_umask())  # mkstemp/mkdtemp make them private
        if folder:
            for child in tmp.iterdir():
                fsync_path(child)
            _swap_folder(tmp, dst)
        else:
            fsync_path(tmp)
            os.replace(tmp, dst)
        with contextlib.suppress(OSError):  # make the rename itself durable
            fsync_path(dst.parent)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _plain(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors with no shared storage (what safetensors requires)."""
    out, seen = {}, set()
    for key, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def write_safetensors(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors to `path` (not atomic by itself: pass a path from `atomic_output`)."""
    from safetensors.torch import save_file

    save_file(_plain(tensors), str(path), metadata=metadata)


def write_torch(tensors: dict[str, Tensor], path: Path) -> None:
    """Write `{'state_dict': tensors}` with torch.save, the official checkpoint layout."""
    torch.save({"state_dict": _plain(tensors)}, path)
