"""Training checkpoints: atomic, self-describing, and enough to resume bit-for-bit.

A checkpoint is a folder `checkpoints/step-00001000/` holding
    transformer.safetensors   the weights + the model config (loadable by `pixart generate --model`)
    ema.safetensors           the EMA weights, when EMA is on
    lora.safetensors          the LoRA adapters alone, when training LoRA
    optimizer.pt              the optimizer state (tensors and numbers only: loads with weights_only=True)
    trainer.json              step, data position, the training config; written last
It is written under a temporary name, every file fsynced, then renamed: a crash at any moment leaves either
the previous checkpoints or a complete new one, never a half-written one. Randomness needs no saved state:
noise, timesteps and caption dropout are drawn from generators seeded by (seed, step), and data order and
augmentation by (seed, epoch, index).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pixart.checkpoint_io import fsync_path

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{8})$")


@dataclass(frozen=True)
class TrainerState:
    """Where training stands: the optimizer steps done, and the data sampler's position after them."""

    step: int
    sampler: dict  # BucketBatchSampler.state_dict(): epoch, batches done, and what identifies the data


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "trainer.json").is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def remove_partial(root: str | Path) -> None:
    """Delete temporary folders left by a save that was killed."""
    root = Path(root)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith("step-") and ".tmp" in p.name:
                logger.info("removing incomplete checkpoint %s", p)
                shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    root: str | Path,
    state: TrainerState,
    model_state: dict[str, torch.Tensor],
    model_config_json: str,
    optimizer_state: dict,
    train_config: dict,
    ema_state: dict[str, torch.Tensor] | None = None,
    lora: tuple[dict[str, torch.Tensor], dict] | None = None,
    keep: int = 3,
) -> Path:
    """Write a checkpoint atomically and keep only the newest `keep`. Returns its folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:08d}"
    tmp = root / f"{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    metadata = {"pixart_config": model_config_json, "format": "pixart"}
    contiguous = {k: v.detach().cpu().contiguous() for k, v in model_state.items()}
    save_file(contiguous, tmp / "transformer.safetensors", metadata=metadata)
    if ema_state is not None:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in ema_state.items()},
            tmp / "ema.safetensors",
            metadata=metadata,
        )
    if lora is not None:  # the adapters alone, for `pixart generate --lora`
        tensors, meta = lora
        save_file(tensors, tmp / "lora.safetensors", metadata={"pixart_lora": json.dumps(meta)})
    torch.save(optimizer_state, tmp / "optimizer.pt")
    trainer = {"step": state.step, "sampler": state.sampler, "train_config": train_config}
    (tmp / "trainer.json").write_text(json.dumps(trainer, indent=2))
    for f in tmp.iterdir():
        fsync_path(f)
    fsync_path(tmp)
    if final.exists():  # a re-run of the same step (e.g. after resuming from it): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(root)
    for old in list_checkpoints(root)[:-keep]:
        # Rename first (atomic), then delete: a kill during the deletion leaves a ".tmp" folder that the next
        # run removes, never a half-deleted checkpoint that still looks complete.
        doomed = old.with_name(f"{old.name}.tmp-delete")
        shutil.rmtree(doomed, ignore_errors=True)
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    logger.info("saved checkpoint %s", final)
    return final


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint folder: {"state", "model", "ema" (or None), "optimizer", "train_config"}."""
    path = Path(path)
    trainer_file = path / "trainer.json"
    if not trainer_file.is_file():
        raise FileNotFoundError(f"{path} is not a complete training checkpoint (no trainer.json)")
    trainer = json.loads(trainer_file.read_text())
    ema_file = path / "ema.safetensors"
    return {
        "state": TrainerState(trainer["step"], trainer["sampler"]),
        "model": load_file(path / "transformer.safetensors"),
        "ema": load_file(ema_file) if ema_file.is_file() else None,
        "optimizer": torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True),
        "train_config": trainer["train_config"],
    }
