"""Checkpoint files: atomic writes, round trip, validation of bad files."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from translution.train import (LRSchedule, OptimConfig, ScheduleConfig, build_optimizer,
                               capture_rng_state, load_checkpoint, save_checkpoint)
from translution.train.checkpoint import REQUIRED_KEYS

from .helpers import TinyClassifier


def _trained(seed: int = 0):
    torch.manual_seed(seed)
    model = TinyClassifier()
    opt = build_optimizer(model, OptimConfig(lr=1e-2))
    sched = LRSchedule(opt, ScheduleConfig(name="cosine"), 4, 8)
    for step in range(3):
        sched.update(step)
        loss = model(torch.randn(5, 8)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt, sched


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched = _trained()
    path = save_checkpoint(tmp_path / "last.pt", model=model, optimizer=opt, scheduler=sched,
                           step=3, epoch=0, rng=[capture_rng_state()], config={"a": [1, 2]},
                           best={"metric": "top1", "mode": "max", "value": 50.0, "step": 2},
                           extra={"elapsed": 1.5})
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]    # no temporary file left
    expected = (torch.rand(4), np.random.rand(2), random.random())

    model2, opt2, sched2 = _trained(seed=1)
    obj = load_checkpoint(path, model2, opt2, sched2, restore_rng=True)
    assert obj["step"] == 3 and obj["config"] == {"a": [1, 2]} and obj["extra"]["elapsed"] == 1.5
    assert obj["best"]["value"] == 50.0
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for k in s1["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1["state"][k][name], s2["state"][k][name])
    assert sched2.base_lrs == sched.base_lrs
    got = (torch.rand(4), np.random.rand(2), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


def test_overwrite_is_atomic_replace(tmp_path):
    model, opt, _ = _trained()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model=model, step=1)
    save_checkpoint(path, model=model, step=2)
    assert load_checkpoint(path)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.pt.*does not exist.*expected a checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_corrupt_truncated_and_empty_files(tmp_path):
    model, opt, _ = _trained()
    good = save_checkpoint(tmp_path / "good.pt", model=model, optimizer=opt, step=1)
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint" * 10)
    (tmp_path / "empty.pt").write_bytes(b"")
    for name, what in (("trunc.pt", "corrupt or truncated"), ("junk.pt", "corrupt or truncated"),
                       ("empty.pt", "is empty")):
        with pytest.raises(ValueError, match=rf"{name}.*{what}"):
            load_checkpoint(tmp_path / name)


def test_wrong_contents(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt.*holds a list"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"model": {}, "step": 1}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"partial\.pt.*missing keys \['format', 'optimizer'"):
        load_checkpoint(tmp_path / "partial.pt")
    obj = {k: None for k in REQUIRED_KEYS} | {"format": "other/9"}
    torch.save(obj, tmp_path / "fmt.pt")
    with pytest.raises(ValueError, match="has format 'other/9'"):
        load_checkpoint(tmp_path / "fmt.pt")


def test_mismatched_model_and_missing_parts(tmp_path):
    model, _, _ = _trained()
    path = save_checkpoint(tmp_path / "m.pt", model=model, step=1)
    with pytest.raises(ValueError, match=r"m\.pt.*does not fit model Linear"):
        load_checkpoint(path, nn.Linear(3, 3))
    with pytest.raises(ValueError, match="holds no optimizer state"):
        load_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="holds no RNG state"):
        load_checkpoint(path, restore_rng=True)
