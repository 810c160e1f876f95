"""Learning-rate schedules as pure functions of the global step.

:class:`LRSchedule` sets ``lr = base_lr * factor(t)`` on every parameter group before each
optimiser step, with ``t`` the step count or the number of completed epochs. Because the
learning rate is a function of the step alone, resuming needs no scheduler state beyond the
base learning rates, and changing ``per`` or ``total`` on resume takes effect cleanly.

The factors match PyTorch's schedulers stepped at the same cadence: ``step`` equals
``StepLR(step_size, gamma)`` and ``cosine`` equals ``CosineAnnealingLR(T_max=total,
eta_min=min_lr)`` (closed form).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .config import ScheduleConfig

__all__ = ["LRSchedule", "lr_factor"]


def lr_factor(cfg: ScheduleConfig, t: int, horizon: int, base_lr: float) -> float:
    """Learning rate at time ``t`` for a base learning rate (closed form).

    Args:
        cfg: Schedule settings.
        t: Time in units of ``cfg.per`` (0-based).
        horizon: Cosine length after warm-up, used when ``cfg.total`` is ``None``.
        base_lr: The optimiser's base learning rate.

    Returns:
        The learning rate (not a multiplier; ``min_lr`` is absolute).
    """
    if t < cfg.warmup:
        return base_lr * (t + 1) / (cfg.warmup + 1)
    t = t - cfg.warmup
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "step":
        return base_lr * cfg.gamma ** (t // cfg.step_size)
    if cfg.name == "cosine":
        total = cfg.total if cfg.total is not None else max(horizon, 1)
        t = min(t, total)
        return cfg.min_lr + (base_lr - cfg.min_lr) * (1 + math.cos(math.pi * t / total)) / 2
    raise ValueError(f"unknown schedule {cfg.name!r}; expected 'constant', 'cosine' or 'step'")


class LRSchedule:
    """Sets the learning rate of every parameter group from the global step.

    Args:
        optimizer: The optimiser; each group's current ``lr`` is taken as its base rate
            (stored as ``initial_lr``, as PyTorch schedulers do).
        cfg: Schedule settings.
        steps_per_epoch: Optimiser steps per epoch (> 0).
        total_steps: Optimiser steps in the whole run (> 0).

    Raises:
        ValueError: If ``steps_per_epoch`` or ``total_steps`` is not positive.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig,
                 steps_per_epoch: int, total_steps: int) -> None:
        if steps_per_epoch <= 0 or total_steps <= 0:
            raise ValueError(f"steps_per_epoch and total_steps must be > 0, got "
                             f"{steps_per_epoch} and {total_steps}")
        self.optimizer = optimizer
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        if cfg.per == "step":
            self.horizon = total_steps - cfg.warmup
        else:
            self.horizon = math.ceil(total_steps / steps_per_epoch) - cfg.warmup
        self.last_lrs = list(self.base_lrs)

    def time(self, step: int) -> int:
        """Schedule time for a global step (the step about to be taken, 0-based)."""
        return step if self.cfg.per == "step" else step // self.steps_per_epoch

    def lrs_at(self, step: int) -> list[float]:
        """Learning rates of every group for the given 0-based global step."""
        t = self.time(step)
        return [lr_factor(self.cfg, t, self.horizon, b) for b in self.base_lrs]

    def update(self, step: int) -> list[float]:
        """Set the group learning rates for the optimiser step ``step`` (0-based)."""
        self.last_lrs = self.lrs_at(step)
        for g, lr in zip(self.optimizer.param_groups, self.last_lrs):
            g["lr"] = lr
        return self.last_lrs

    def get_last_lr(self) -> list[float]:
        """Learning rates set by the last :meth:`update`."""
        return list(self.last_lrs)

    def state_dict(self) -> dict[str, Any]:
        """Base learning rates (the only state); the schedule itself comes from the config."""
        return {"base_lrs": list(self.base_lrs), "last_lrs": list(self.last_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore base learning rates saved by :meth:`state_dict`.

        Raises:
            ValueError: If the number of parameter groups differs.
        """
        base = list(state["base_lrs"])
        if len(base) != len(self.optimizer.param_groups):
            raise ValueError(f"schedule state has {len(base)} parameter groups, the optimiser "
                             f"has {len(self.optimizer.param_groups)}")
        self.base_lrs = base
        self.last_lrs = list(state.get("last_lrs", base))
        for g, b in zip(self.optimizer.param_groups, base):
            g["initial_lr"] = b
