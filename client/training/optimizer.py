"""The recipe's optimiser (its rate is set per step from the recipe's schedule by the caller)."""

from __future__ import annotations

import torch
from torch import nn

from stsfl.common.config.train import TrainConfig


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser over `params` (its rate is set per step by the schedule)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay)
