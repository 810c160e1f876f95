"""Issue 11 faults of the training slice: resumes with changed settings, damaged checkpoints,
left-over temporaries and refused pickles."""

from __future__ import annotations

import logging
import zipfile

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from translution.train import (ClassificationTask, DatasetBatches, fit, load_checkpoint,
                               load_config, read_metrics, save_checkpoint)

from .helpers import NoisyDataset, TinyClassifier


def _fit(out, args, **kwargs):
    cfg = load_config(None, ["train.log_every=1", "train.checkpoint_every=2",
                             "train.device=cpu"] + args)
    torch.manual_seed(0)
    model = TinyClassifier(hidden=64)
    events = []
    summary = fit(model, ClassificationTask(), DatasetBatches(NoisyDataset(40), 4), cfg,
                  out_dir=out, callbacks=[events.append], **kwargs)
    return summary, [e for e in events if e["event"] == "step"]


def test_resume_applies_new_optimiser_settings_and_says_so(tmp_path, caplog):
    _fit(tmp_path, ["train.max_steps=10", "optim.lr=1e-3", "optim.weight_decay=0.5"])
    with caplog.at_level(logging.WARNING, logger="translution.train"):
        _, steps = _fit(tmp_path, ["train.max_steps=20", "optim.lr=5e-2",
                                   "optim.weight_decay=0.0"])
    assert [e["step"] for e in steps] == list(range(11, 21))
    assert all(e["lr"] == 5e-2 for e in steps)
    assert all(r["lr"] == 5e-2 for r in read_metrics(tmp_path / "metrics.jsonl", "train")
               if r["step"] > 10)
    groups = load_checkpoint(tmp_path / "last.pt")["optimizer"]["param_groups"]
    assert all(g["weight_decay"] == 0.0 and g["initial_lr"] == 5e-2 for g in groups)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "optim.lr 0.001 -> 0.05" in message and "optim.weight_decay 0.5 -> 0.0" in message


def test_resume_with_another_optimiser_is_refused_before_writing(tmp_path):
    _fit(tmp_path, ["train.max_steps=4", "optim.name=adadelta", "optim.lr=1.0"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="trained with optimiser 'adadelta'.*'adamw'"):
        _fit(tmp_path, ["train.max_steps=8", "optim.name=adamw"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _flip_bit_in_tensor(path):
    """Flip one exponent bit inside the stored bytes of the largest tensor."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    header = 30 + len(info.filename.encode()) + int.from_bytes(
        data[info.header_offset + 28:info.header_offset + 30], "little")
    data[info.header_offset + header + 4 * 100 + 3] ^= 0x40
    path.write_bytes(bytes(data))


def test_damaged_checkpoint_is_refused(tmp_path):
    model = nn.Linear(64, 64)
    path = save_checkpoint(tmp_path / "last.pt", model=model, step=3)
    _flip_bit_in_tensor(path)
    with pytest.raises(ValueError, match=r"last\.pt.*damaged.*CRC"):
        load_checkpoint(path)


def test_resume_falls_back_to_previous_checkpoint(tmp_path, caplog):
    reference, ref_steps = _fit(tmp_path / "ref", ["train.max_steps=8"])
    out = tmp_path / "run"
    _fit(out, ["train.max_steps=8"], stop_after_steps=6)      # checkpoints at 2, 4, 6
    assert load_checkpoint(out / "prev.pt")["step"] == 4
    _flip_bit_in_tensor(out / "last.pt")
    with caplog.at_level(logging.WARNING, logger="translution.train"):
        summary, steps = _fit(out, ["train.max_steps=8"])
    assert "falling back to" in caplog.text and "prev.pt" in caplog.text
    assert summary["resumed_from_step"] == 4 and [e["step"] for e in steps] == [5, 6, 7, 8]
    assert [e["loss"] for e in steps] == [e["loss"] for e in ref_steps][4:]
    a, b = load_checkpoint(out / "last.pt")["model"], load_checkpoint(tmp_path / "ref/last.pt")["model"]
    for k in a:
        assert_close(a[k], b[k], rtol=0, atol=0)


def test_resume_without_a_good_checkpoint_fails_clearly(tmp_path):
    _fit(tmp_path, ["train.max_steps=2"])                      # one checkpoint: no prev.pt
    _flip_bit_in_tensor(tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt.*damaged"):
        _fit(tmp_path, ["train.max_steps=4"])


def test_resume_removes_stale_temporaries(tmp_path):
    _fit(tmp_path, ["train.max_steps=2"])
    for name in (".last.pt.tmp-99999", ".last.pt.tmp-4242-x1y2", ".best.pt.tmp-7",
                 ".config.yaml.tmp-8"):
        (tmp_path / name).write_bytes(b"half a checkpoint")
    _fit(tmp_path, ["train.max_steps=4"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


class _Payload:
    pass


def test_unsafe_pickle_is_named_as_such(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "translution.train/1", "model": _Payload()}, path)
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert "holds objects that are not allowed" in message and "_Payload" in message
    assert "weights_only" not in message and "corrupt" not in message
