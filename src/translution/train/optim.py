"""Optimiser construction from :class:`~translution.train.config.OptimConfig`."""

from __future__ import annotations

import torch
from torch import nn

from .config import OptimConfig

__all__ = ["build_optimizer"]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """``AdamW``, ``Adadelta`` or ``SGD`` over the trainable parameters of ``model``; with
    ``cfg.decay_1d=False`` parameters of fewer than two dims (biases, norms) get no decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"model {type(model).__name__} has no trainable parameters")
    groups = [{"params": params, "weight_decay": cfg.weight_decay}]
    if not cfg.decay_1d and cfg.weight_decay:
        groups = [g for g in ({"params": [p for p in params if p.ndim >= 2],
                               "weight_decay": cfg.weight_decay},
                              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0})
                  if g["params"]]
    eps = {} if cfg.eps is None else {"eps": cfg.eps}
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, **eps)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **eps)
