"""metrics.jsonl: reading, a torn last line (kill -9, full disk), corruption earlier."""

from __future__ import annotations

import json

import pytest
import torch

from translution.train import (ClassificationTask, DatasetBatches, MetricsLogger, fit,
                               load_config, read_metrics)

from .helpers import NoisyDataset, TinyClassifier

RECORDS = [{"event": "train", "step": 2, "loss": 1.5}, {"event": "eval", "step": 2, "top1": 50.0},
           {"event": "train", "step": 4, "loss": 1.25}]


def _write(path, text):
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + text)
    return path


def test_reads_records_and_filters_by_event(tmp_path):
    path = _write(tmp_path / "metrics.jsonl", "\n")                    # a blank line is fine
    assert read_metrics(path) == RECORDS
    assert read_metrics(path, "eval") == [RECORDS[1]]


def test_torn_last_line_is_dropped_with_a_warning(tmp_path):
    path = _write(tmp_path / "metrics.jsonl", '{"event": "eval", "st')
    with pytest.warns(UserWarning, match=r"metrics\.jsonl.*line 4.*incomplete.*dropped"):
        assert read_metrics(path) == RECORDS


@pytest.mark.parametrize("where", ["earlier", "last line with its newline"])
def test_corruption_is_refused(tmp_path, where):
    path = tmp_path / "metrics.jsonl"
    if where == "earlier":
        lines = [json.dumps(r) for r in RECORDS]
        lines[1] = lines[1][:10]
        path.write_text("\n".join(lines) + "\n")
        line = 2
    else:
        _write(path, '{"event": "eval", "st\n')
        line = 4
    with pytest.raises(ValueError, match=rf"metrics\.jsonl.*line {line} is not valid JSON"):
        read_metrics(path)


def test_truncate_after_repairs_a_torn_file(tmp_path):
    path = _write(tmp_path / "metrics.jsonl", '{"event": "train", "step": 6, "lo')
    with pytest.warns(UserWarning, match="incomplete"):
        MetricsLogger(tmp_path).truncate_after(2)
    assert read_metrics(path) == RECORDS[:2]                 # no warning: the file is whole
    assert path.read_text().endswith("\n")


def _run(out, stop_after=None):
    cfg = load_config(None, ["train.max_steps=8", "train.log_every=2", "train.eval_every=4",
                             "train.checkpoint_every=4", "train.device=cpu"])
    torch.manual_seed(0)
    return fit(TinyClassifier(), ClassificationTask(), DatasetBatches(NoisyDataset(24), 4), cfg,
               DatasetBatches(NoisyDataset(8, seed=5), 4, shuffle=False), out_dir=out,
               stop_after_steps=stop_after)


def _records(path):
    return [{k: v for k, v in r.items() if k not in ("time", "step_time")}
            for r in read_metrics(path / "metrics.jsonl")]


def test_resume_after_a_torn_last_line(tmp_path):
    ref = _run(tmp_path / "ref")
    out = tmp_path / "torn"
    _run(out, stop_after=5)                                  # last.pt at step 5
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"event": "train", "step": 6, "lr": 0.0')   # killed while writing step 6
    with pytest.warns(UserWarning, match="incomplete"):
        summary = _run(out)
    assert summary["resumed_from_step"] == 5 and summary["eval"] == ref["eval"]
    assert _records(out) == _records(tmp_path / "ref")
