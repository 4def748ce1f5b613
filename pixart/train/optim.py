"""Optimizer, learning-rate schedule and EMA, as the reference recipe uses them (REFERENCE.md §1.8).

- AdamW (torch) or CAME (the `came-pytorch` package, PixArt-Σ's choice: Adam-like quality at Adafactor memory).
- lr scaled by sqrt(global batch / 256) ("auto_lr"), linear warmup, then constant as the reference, or (an option
  the reference lacks) held and then decayed, linearly or on a cosine, over the run's last steps: a cooldown.
- EMA of the weights in fp32, updated after every optimizer step.
The schedule is a pure function of the step, so resuming needs no scheduler state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pixart.train.config import OptimSection


def effective_lr(optim: OptimSection, global_batch: int) -> float:
    """The peak learning rate after the reference's sqrt scaling rule (if enabled)."""
    return optim.lr * math.sqrt(global_batch / 256) if optim.sqrt_lr_scaling else optim.lr


def lr_at(
    step: int,
    peak_lr: float,
    warmup_steps: int,
    *,
    decay: str = "none",
    decay_steps: int = 0,
    max_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> float:
    """lr of optimizer step `step` (1-based): linear warmup to `peak_lr` over `warmup_steps`, then constant.

    With `decay` "linear" or "cosine" the lr then stays at `peak_lr` until the last `decay_steps` steps of a
    `max_steps` run (0 = every step after warmup) and falls over them to `min_lr_ratio * peak_lr`, reached at
    step `max_steps`.
    """
    lr = peak_lr if warmup_steps <= 0 else peak_lr * min(1.0, step / warmup_steps)
    if decay == "none":
        return lr
    start = max(warmup_steps, max_steps - decay_steps) if decay_steps > 0 else warmup_steps
    if step <= start or max_steps <= start:
        return lr
    done = min(1.0, (step - start) / (max_steps - start))  # 0 -> 1 over the decay
    shape = 1.0 - done if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * done))
    return peak_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * shape)


def build_optimizer(model: nn.Module, optim: OptimSection, peak_lr: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if optim.name == "adamw":
        if len(optim.betas) != 2 or len(optim.eps) != 1:
            raise ValueError(f"adamw takes 2 betas and 1 eps, got betas={optim.betas}, eps={optim.eps}")
        return torch.optim.AdamW(
            params, lr=peak_lr, betas=tuple(optim.betas), eps=optim.eps[0], weight_decay=optim.weight_decay
        )
    if optim.name == "came":
        try:
            from came_pytorch import CAME
        except ImportError:
            raise ValueError("optim.name='came' needs the came-pytorch package: pip install came-pytorch") from None
        betas = tuple(optim.betas) if len(optim.betas) == 3 else (0.9, 0.999, 0.9999)
        eps = tuple(optim.eps) if len(optim.eps) == 2 else (1e-30, 1e-16)
        return CAME(params, lr=peak_lr, betas=betas, eps=eps, weight_decay=optim.weight_decay)
    raise ValueError(f"optim.name={optim.name!r}: allowed are adamw, came")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ---- EMA ---------------------------------------------------------------------------------------------------------


def init_ema(model: nn.Module) -> dict[str, torch.Tensor]:
    """An fp32 copy of the trainable weights, keyed like the state dict."""
    return {name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def update_ema(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * weights.

    Under FSDP each process holds a shard of every weight: it gathers the full weight (a collective, so every
    process must call this) and keeps a full EMA, as the reference's EMA is kept whole on every process. The EMA
    may live on another device than the model (weights are copied to it). All weights are updated in one
    `_foreach_lerp_` call (a few kernels instead of one per weight: for a small model on a GPU the per-kernel cost
    dominates).
    """
    names, weights = [], []
    for name, p in model.named_parameters():
        if name in ema:
            weight = p.full_tensor() if hasattr(p, "full_tensor") else p  # a DTensor shard -> the whole weight
            names.append(name)
            weights.append(weight.detach().to(ema[name].device, torch.float32))
    if names:
        torch._foreach_lerp_([ema[n] for n in names], weights, 1.0 - decay)


def ema_state_dict(ema: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's full `state` dict (buffers included) with the EMA weights in their place, in its dtypes."""
    out = {}
    for name, value in state.items():
        out[name] = ema[name].to(value.dtype) if name in ema else value
    return out
