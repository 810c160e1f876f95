"""Optimiser and learning rate, a pure function of the global step (resuming needs only the base
rates): the ``step`` schedule equals PyTorch's ``StepLR``, ``cosine`` its ``CosineAnnealingLR``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig

__all__ = ["build_optimizer", "LRSchedule", "lr_factor"]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """``AdamW``, ``Adadelta`` or ``SGD`` over the trainable parameters of ``model``; with
    ``cfg.decay_1d=False`` parameters of fewer than two dims (biases, norms) get no decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"model {type(model).__name__} has no trainable parameters")
    groups = [{"params": params, "weight_decay": cfg.weight_decay}]
    if not cfg.decay_1d and cfg.weight_decay:
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    eps = {} if cfg.eps is None else {"eps": cfg.eps}
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, **eps)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **eps)


def lr_factor(cfg: ScheduleConfig, t: int, horizon: int, base_lr: float) -> float:
    """The learning rate at time ``t`` (in units of ``cfg.per``, 0-based); ``horizon`` is the
    cosine length after warm-up when ``cfg.total`` is ``None``."""
    if t < cfg.warmup:
        return base_lr * (t + 1) / (cfg.warmup + 1)
    t = t - cfg.warmup
    if cfg.name == "step":
        return base_lr * cfg.gamma ** (t // cfg.step_size)
    if cfg.name == "cosine":
        total = cfg.total if cfg.total is not None else max(horizon, 1)
        return cfg.min_lr + (base_lr - cfg.min_lr) * (1 + math.cos(math.pi * min(t, total)
                                                                   / total)) / 2
    return base_lr


class LRSchedule:
    """Sets every parameter group's learning rate from the global step; a group's ``lr`` at
    construction is its base rate (kept as ``initial_lr``, as PyTorch's schedulers do)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig,
                 steps_per_epoch: int, total_steps: int) -> None:
        if steps_per_epoch <= 0 or total_steps <= 0:
            raise ValueError(f"steps_per_epoch and total_steps must be > 0, got "
                             f"{steps_per_epoch} and {total_steps}")
        self.optimizer, self.cfg, self.steps_per_epoch = optimizer, cfg, steps_per_epoch
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        units = total_steps if cfg.per == "step" else math.ceil(total_steps / steps_per_epoch)
        self.horizon = units - cfg.warmup

    def update(self, step: int) -> list[float]:
        """Set and return the group learning rates of the (0-based) optimiser step ``step``."""
        t = step if self.cfg.per == "step" else step // self.steps_per_epoch
        lrs = [lr_factor(self.cfg, t, self.horizon, b) for b in self.base_lrs]
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """The base learning rates (the schedule itself comes from the config)."""
        return {"base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the base learning rates (``ValueError`` for another number of groups)."""
        base = list(state["base_lrs"])
        if len(base) != len(self.optimizer.param_groups):
            raise ValueError(f"schedule state has {len(base)} parameter groups, the optimiser "
                             f"has {len(self.optimizer.param_groups)}")
        self.base_lrs = base
        for g, b in zip(self.optimizer.param_groups, base):
            g["initial_lr"] = b
