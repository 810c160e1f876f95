"""Learning-rate schedules match PyTorch's schedulers; optimiser construction."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from translution.train import LRSchedule, OptimConfig, ScheduleConfig, build_optimizer


def _opt(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)


def test_step_per_epoch_matches_steplr():
    # the MNIST recipe: Adadelta lr 1.0, StepLR(step_size=1, gamma=0.7) stepped per epoch
    spe, epochs = 5, 4
    sched = LRSchedule(_opt(), ScheduleConfig(name="step", per="epoch", step_size=1, gamma=0.7),
                       spe, spe * epochs)
    ref_opt = _opt()
    ref = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=1, gamma=0.7)
    for epoch in range(epochs):
        for i in range(spe):
            assert sched.update(epoch * spe + i)[0] == pytest.approx(ref.get_last_lr()[0],
                                                                     rel=1e-12)
        ref_opt.step()
        ref.step()


def test_cosine_per_step_matches_torch():
    total = 20
    sched = LRSchedule(_opt(3e-4), ScheduleConfig(name="cosine", min_lr=1e-5), 7, total)
    ref_opt = _opt(3e-4)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=total, eta_min=1e-5)
    for step in range(total):
        assert sched.update(step)[0] == pytest.approx(ref.get_last_lr()[0], rel=1e-9)
        ref_opt.step()
        ref.step()


def test_cosine_per_epoch_with_warmup():
    spe = 3
    cfg = ScheduleConfig(name="cosine", per="epoch", warmup=2)
    sched = LRSchedule(_opt(1.0), cfg, spe, spe * 12)               # 12 epochs, 10 after warm-up
    lrs = [sched.update(s)[0] for s in range(spe * 12)]
    per_epoch = lrs[::spe]
    assert lrs[:spe] == [1 / 3] * spe                               # constant within an epoch
    assert per_epoch[:2] == pytest.approx([1 / 3, 2 / 3])
    assert per_epoch[2] == pytest.approx(1.0)
    for e in range(2, 12):
        assert per_epoch[e] == pytest.approx((1 + math.cos(math.pi * (e - 2) / 10)) / 2)


def test_constant_and_state_dict():
    opt = _opt(0.5)
    sched = LRSchedule(opt, ScheduleConfig(), 4, 8)
    assert sched.update(7) == [0.5] and opt.param_groups[0]["lr"] == 0.5
    other = LRSchedule(_opt(0.1), ScheduleConfig(), 4, 8)
    other.load_state_dict(sched.state_dict())
    assert other.update(0) == [0.5]
    with pytest.raises(ValueError, match="parameter groups"):
        other.load_state_dict({"base_lrs": [1.0, 2.0]})
    with pytest.raises(ValueError, match="must be > 0"):
        LRSchedule(_opt(), ScheduleConfig(), 0, 8)


def test_build_optimizer_kinds_and_groups():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    adamw = build_optimizer(model, OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05,
                                               betas=(0.9, 0.95)))
    assert isinstance(adamw, torch.optim.AdamW) and len(adamw.param_groups) == 1
    assert adamw.param_groups[0]["betas"] == (0.9, 0.95)
    split = build_optimizer(model, OptimConfig(weight_decay=0.05, decay_1d=False))
    assert [len(g["params"]) for g in split.param_groups] == [1, 3]
    assert [g["weight_decay"] for g in split.param_groups] == [0.05, 0.0]
    ada = build_optimizer(model, OptimConfig(name="adadelta", lr=1.0))
    assert isinstance(ada, torch.optim.Adadelta) and ada.param_groups[0]["lr"] == 1.0
    assert isinstance(build_optimizer(model, OptimConfig(name="sgd", lr=0.1)), torch.optim.SGD)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen, OptimConfig())
