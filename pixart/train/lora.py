"""LoRA: train low-rank adapters with peft, save them alone, and merge them into a model for generation.

Training uses peft's `LoraConfig` on the reference's target modules (REFERENCE.md §1.10), translated to our
module names: attention q/k/v/out (`qkv`, `q_linear`, `kv_linear`, `proj`), the MLPs (`fc1`, `fc2`), the
timestep and caption embedders and `t_block` (`mlp.0`, `mlp.2`, `t_block.1`, `y_proj.fc*`), and the output
`linear`. A saved adapter is a safetensors file of the A/B matrices with its rank, alpha and targets as JSON
metadata; merging it needs no peft: W += scale * (alpha / rank) * B @ A.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

logger = logging.getLogger(__name__)

# Suffixes of module names, as peft matches them.
DEFAULT_TARGETS = ("qkv", "q_linear", "kv_linear", "proj", "fc1", "fc2", "linear", "t_block.1", "mlp.0", "mlp.2")


def add_lora(
    model: nn.Module,
    rank: int = 16,
    alpha: float | None = None,
    targets=DEFAULT_TARGETS,
    dropout: float = 0.0,
    init: str = "gaussian",
) -> nn.Module:
    """Freeze `model` and inject trainable LoRA adapters (in place). Returns the model."""
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise ValueError(f"LoRA rank={rank}: must be >= 1")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        target_modules=list(targets),
        lora_dropout=dropout,
        init_lora_weights=init,
    )
    for p in model.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(config, model)
    model._lora_meta = {"rank": rank, "alpha": float(config.lora_alpha), "targets": list(targets)}
    return model


def lora_state_dict(model: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the adapter weights, keyed `<module>.lora_A.weight` / `<module>.lora_B.weight`, from a model or its
    full state dict (what a sharded model's weights must be gathered into first)."""
    out = {}
    state = model if isinstance(model, dict) else model.state_dict()
    for name, tensor in state.items():
        if ".lora_A." in name or ".lora_B." in name:
            out[name.replace(".default", "")] = tensor.detach().cpu().contiguous()
    return out


def save_lora(model: nn.Module, path: str | Path) -> None:
    """Write the adapters atomically as safetensors with {rank, alpha, targets} metadata."""
    meta = getattr(model, "_lora_meta", None)
    if meta is None:
        raise ValueError("this model has no LoRA adapters (call add_lora first)")
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    save_file(lora_state_dict(model), tmp, metadata={"pixart_lora": json.dumps(meta)})
    os.replace(tmp, path)


def load_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(adapter tensors, {rank, alpha, targets}) from a file written by `save_lora`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("pixart_lora", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a broken header, a non-safetensors file
        raise ValueError(f"{path}: not a readable LoRA safetensors file ({e})") from None
    if meta is None:
        raise ValueError(f"{path}: no 'pixart_lora' metadata; not a LoRA file written by pixart")
    return tensors, meta


@torch.no_grad()
def merge_lora(model: nn.Module, tensors: dict[str, torch.Tensor], meta: dict, scale: float = 1.0) -> int:
    """Add scale * (alpha/rank) * B @ A into each target weight of a plain model. Returns layers merged."""
    modules = dict(model.named_modules())
    factor = scale * meta["alpha"] / meta["rank"]
    merged = 0
    for key in sorted(tensors):
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[: -len(".lora_A.weight")]
        if name not in modules:
            raise ValueError(f"LoRA targets module {name!r}, which this model does not have")
        a, b = tensors[key], tensors[f"{name}.lora_B.weight"]
        weight = modules[name].weight
        if weight.dim() == 2:  # Linear: (out, r) @ (r, in)
            delta = b.float() @ a.float()
        else:  # Conv2d: A is (r, in, k, k), B is (out, r, 1, 1)
            delta = (b.flatten(1).float() @ a.flatten(1).float()).reshape(weight.shape)
        if delta.shape != weight.shape:
            raise ValueError(f"LoRA for {name!r}: update {tuple(delta.shape)} vs weight {tuple(weight.shape)}")
        weight.add_((factor * delta).to(weight.dtype))
        merged += 1
    logger.info("merged %d LoRA layers (scale %.3g)", merged, scale)
    return merged
