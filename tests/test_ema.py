"""The training EMA (pixart.train.optim): the update rule, and an EMA kept on another device than the model."""

from __future__ import annotations

import torch
from torch import nn

from pixart.train.optim import init_ema, update_ema


def test_update_is_decay_times_ema_plus_the_rest_times_the_weights():
    model = nn.Linear(3, 2)
    ema = init_ema(model)
    before = {k: v.clone() for k, v in ema.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    update_ema(ema, model, decay=0.9)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ema[name], 0.9 * before[name] + 0.1 * p.detach())


def test_an_ema_on_another_device_than_the_model_is_updated_there():
    # On a GPU the EMA was built on the CPU before the model moved; the update must copy the weights across
    # ("meta" stands in for the second device on a machine without one).
    model = nn.Linear(3, 2)
    ema = {k: v.to("meta") for k, v in init_ema(model).items()}
    update_ema(ema, model, decay=0.999)
    assert all(v.device.type == "meta" and v.dtype == torch.float32 for v in ema.values())
