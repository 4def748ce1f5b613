"""A DiT stage's weights beyond its run: its newest checkpoint exported as a transformer file, and the fp16 copy
(`carry-fp16.safetensors`) committed so that a fresh clone goes on from a stage without training it again.

Used by `pixart.demo.build` (each stage's final.safetensors, `--export-latest`, `--carry`, restoring a carried
stage) and `scripts/gpu_build.py`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

CARRY = "carry-fp16.safetensors"  # a DiT stage's final weights (`carried_weights`) in fp16: ~18 MB, to commit


def latest_step(run_dir: Path) -> int | None:
    """The step of a run's newest complete checkpoint (None when it has none)."""
    from pixart.train.state import latest_checkpoint

    path = latest_checkpoint(run_dir / "checkpoints")
    return None if path is None else json.loads((path / "trainer.json").read_text())["step"]


def export_latest(run_dir: Path, dst: Path, *, ema: bool = True) -> int:
    """Write the newest checkpoint of a DiT run (its EMA weights when kept and `ema`) as a transformer file; returns
    its step.

    Used for each stage's final.safetensors and, mid-run, for evaluating a snapshot (`--export-latest STAGE`).
    """
    import torch

    from pixart.checkpoint import build_model, save_transformer
    from pixart.config import ModelConfig
    from pixart.train.state import latest_checkpoint, load_checkpoint

    path = latest_checkpoint(run_dir / "checkpoints")
    if path is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} holds no checkpoint yet")
    ckpt = load_checkpoint(path)
    weights = ckpt["ema"] if ema and ckpt["ema"] is not None else ckpt["model"]
    model_cfg = ModelConfig.from_json(_config_json(run_dir))
    save_transformer(build_model(model_cfg, {k: v.to(torch.float32) for k, v in weights.items()}), dst)
    return ckpt["state"].step


def write_carry(run_dir: Path, weights: str) -> Path:
    """RUN/carry-fp16.safetensors from RUN/WEIGHTS.safetensors ("final" or "final-raw")."""
    import torch

    from pixart.checkpoint import load_transformer, save_transformer

    return save_transformer(load_transformer(run_dir / f"{weights}.safetensors", dtype=torch.float16), run_dir / CARRY)


def restore_carry(run_dir: Path) -> bool:
    """RUN/final.safetensors and final-raw.safetensors back from RUN/carry-fp16.safetensors (fp32 again; only the
    weights the next stage reads were carried, so both are those). Returns whether there was a carry to restore."""
    import torch

    from pixart.checkpoint import load_transformer, save_transformer

    carry = run_dir / CARRY
    if not carry.exists():
        return False
    model = load_transformer(carry, dtype=torch.float32)
    for name in ("final-raw.safetensors", "final.safetensors"):
        save_transformer(model, carry.with_name(name))
    logger.info("%s: weights restored from %s (the carried fp16 weights)", run_dir.name, carry)
    return True


def _config_json(run_dir: Path) -> str:
    """The model config stored in the newest checkpoint of a run."""
    from safetensors import safe_open

    from pixart.train.state import latest_checkpoint

    with safe_open(str(latest_checkpoint(run_dir / "checkpoints") / "transformer.safetensors"), "pt") as f:
        return f.metadata()["pixart_config"]
