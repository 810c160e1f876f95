"""Optimiser construction from :class:`~translution.train.config.OptimConfig`."""

from __future__ import annotations

import torch
from torch import nn

from .config import OptimConfig

__all__ = ["build_optimizer"]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Create the optimiser named by ``cfg`` over the trainable parameters of ``model``.

    With ``cfg.decay_1d=False`` parameters with fewer than two dimensions (biases, norm
    weights, gains) go into a second group with ``weight_decay=0``.

    Args:
        model: The (unwrapped) module whose ``requires_grad`` parameters are optimised.
        cfg: Optimiser settings.

    Returns:
        A ``torch.optim.AdamW``, ``Adadelta`` or ``SGD`` instance.

    Raises:
        ValueError: If the model has no trainable parameters or the name is unknown.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"model {type(model).__name__} has no trainable parameters")
    if cfg.decay_1d or cfg.weight_decay == 0:
        groups: list[dict] = [{"params": [p for _, p in named], "weight_decay": cfg.weight_decay}]
    else:
        decay = [p for _, p in named if p.ndim >= 2]
        no_decay = [p for _, p in named if p.ndim < 2]
        groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if cfg.name == "adamw":
        kw = {} if cfg.eps is None else {"eps": cfg.eps}
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **kw)
    if cfg.name == "adadelta":
        kw = {} if cfg.eps is None else {"eps": cfg.eps}
        return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, **kw)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    raise ValueError(f"unknown optimiser {cfg.name!r}; expected 'adamw', 'adadelta' or 'sgd'")
