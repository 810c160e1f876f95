"""Smoke test of the Austen language-modelling experiment on a tiny generated corpus."""

import dataclasses
import json
import random

import pytest
import torch

from translution.experiments import austen
from translution.train import read_metrics

WORDS = ("it is a truth universally acknowledged that a single man in possession of a good "
         "fortune must be in want of a wife").split()


def _text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)) + ". It is a truth."


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(0)
    return [_text(rng, 400), _text(rng, 400)], [_text(rng, 150)]


def _tiny(**changes):
    s = dataclasses.replace(
        austen.QUICK, block_size=12, batch_size=4, dim=16, depth=1, heads=2, dim_head=8,
        model_overrides={"translution": {"dim": 8, "dim_head": 4}}, budget_seconds=1.0,
        calibration_steps=1, eval_points=2, val_windows=6, eval_batch_size=3, samples=1,
        sample_tokens=20, log_every=5, threads=1)
    return dataclasses.replace(s, **changes)


class _Interrupt(Exception):
    pass


def test_run_writes_report_and_resumes(tmp_path, corpus):
    threads = torch.get_num_threads()
    try:
        s = _tiny()
        out = tmp_path / "austen"
        results = austen.run(out, s, corpus=corpus, log=lambda m: None)
        assert list(results) == list(s.models)
        on_disk = json.loads((out / "results.json").read_text())
        assert on_disk == results
        for label, r in results.items():
            for key in ("val_loss", "val_ppl", "parameters", "tokens_per_s", "seconds", "steps",
                        "sample"):
                assert key in r, (label, key)
            assert r["steps"] >= 1 and r["parameters"] > 0 and r["tokens_per_s"] > 0
            assert r["sample"].startswith(s.prompt)
            assert r["val_ppl"] == pytest.approx(torch.tensor(r["val_loss"]).exp().item(),
                                                 rel=1e-5)
        report = (out / "report.md").read_text()
        assert "Equal budget" in report and "Translution" in report
        for png in ("curves_train.png", "curves_val.png", "val_vs_time.png"):
            assert (out / png).stat().st_size > 0

        # a second run resumes the finished runs: nothing is trained or evaluated again
        metrics = (out / "runs" / "rope" / "metrics.jsonl").read_text()
        again = austen.run(out, s, corpus=corpus, log=lambda m: None)
        assert {k: v["steps"] for k, v in again.items()} == \
            {k: v["steps"] for k, v in results.items()}
        assert {k: v["val_loss"] for k, v in again.items()} == \
            {k: v["val_loss"] for k, v in results.items()}
        assert (out / "runs" / "rope" / "metrics.jsonl").read_text() == metrics

        # other settings in the same folder are refused
        with pytest.raises(ValueError, match="other settings"):
            austen.run(out, _tiny(budget_seconds=2.0), corpus=corpus, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)


def test_interrupted_run_continues(tmp_path, corpus, monkeypatch):
    # a calibration of 1/40 of the budget plans 40 steps; the budget itself never binds
    monkeypatch.setattr(austen, "_step_time", lambda *args: 1000.0 / 40)
    threads = torch.get_num_threads()
    try:
        s = _tiny(models={"APE": "ape"}, budget_seconds=1000.0, eval_points=4)
        out = tmp_path / "austen"

        def stop_after_first_chunk(message):
            if message.startswith("  APE: step"):
                raise _Interrupt

        with pytest.raises(_Interrupt):
            austen.run(out, s, corpus=corpus, log=stop_after_first_chunk)
        first = max(r["step"] for r in read_metrics(out / "runs" / "ape" / "metrics.jsonl"))
        results = austen.run(out, s, corpus=corpus, log=lambda m: None)
        records = read_metrics(out / "runs" / "ape" / "metrics.jsonl")
        steps = [r["step"] for r in records if r["event"] == "train"]
        assert results["APE"]["steps"] == 40 and first == 10
        assert steps == sorted(set(steps))           # no step trained twice
        val_steps = [r["step"] for r in records if r["event"] == "eval"]
        assert val_steps == sorted(set(val_steps)) and val_steps[0] == 0
        assert all(r["set"] == "val" for r in records if r["event"] == "eval")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("change, match", [
    (dict(tokenizer="bpe"), "tokenizer"),
    (dict(models={"x": "conv"}), r"models.x: expected one of \[.ape.,"),
    (dict(budget_seconds=0.0), "budget_seconds"),
    (dict(model_overrides={"translution": {"block_size": 8}}), "block_size"),
    (dict(prompt="Zebra!"), "prompt"),
])
def test_invalid_settings(tmp_path, corpus, change, match):
    with pytest.raises(ValueError, match=match):
        austen.run(tmp_path, _tiny(**change), corpus=corpus, log=lambda m: None)


def test_invalid_corpus(tmp_path):
    with pytest.raises(ValueError, match="corpus"):
        austen.run(tmp_path, _tiny(), corpus=(["only train"],), log=lambda m: None)
