"""Smoke tests of the Austen language-modelling experiment on a tiny generated corpus: equal
time, equal steps over seeds, and evaluation beyond the trained context."""

import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch

from translution import cli
from translution.experiments import austen
from translution.train import read_metrics

WORDS = ("it is a truth universally acknowledged that a single man in possession of a good "
         "fortune must be in want of a wife").split()
LENGTHS = [12, 24, 48]


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
        calibration_steps=1, steps=6, seeds=1, eval_lengths=list(LENGTHS), eval_points=2,
        val_chunks=2, eval_batch_size=3, samples=1, sample_tokens=20, log_every=5, threads=1)
    return dataclasses.replace(s, **changes)


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class _Interrupt(Exception):
    pass


def _untimed(results):
    """Results without the timings (a resumed run re-reads them to the checkpoint's clock)."""
    timed = ("seconds", "tokens_per_s")
    return {label: {k: ({x: y for x, y in v.items() if x not in timed} if isinstance(v, dict)
                        else v) for k, v in r.items() if k not in timed}
            for label, r in results.items()}


def _check_equal_time(results, s):
    for label, r in results.items():
        for key in ("val_loss", "val_ppl", "parameters", "tokens_per_s", "seconds", "steps",
                    "sample"):
            assert key in r, (label, key)
        assert r["steps"] >= 1 and r["parameters"] > 0 and r["tokens_per_s"] > 0
        assert r["sample"].startswith(s.prompt)
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-9)


def _check_equal_steps(results, s):
    for label, r in results.items():
        e = r["equal_steps"]
        assert len(e["seeds"]) == s.seeds and e["steps"] == s.steps
        assert e["tokens"] == s.steps * s.batch_size * s.block_size
        assert e["parameters"] > 0 and e["seconds"] > 0
        assert e["settings"] == s.to_dict()                   # what pool_seeds compares
        torch.testing.assert_close(e["perplexity"], float(np.mean(e["seeds"])))
        torch.testing.assert_close(e["perplexity_std"], float(np.std(e["seeds"], ddof=1)))
        assert list(r["length"]) == [str(n) for n in LENGTHS]
        for n, entry in r["length"].items():
            if r.get("kind", "") == "ape" or label.startswith("Self-attention + abs"):
                if int(n) > s.block_size:        # APE cannot read past its table: n/a, no crash
                    assert entry["perplexity"] is None and entry["seeds"] == []
                    assert entry["note"] == f"absolute positions only up to {s.block_size}"
                    continue
            assert len(entry["seeds"]) == s.seeds and all(math.isfinite(p) for p in entry["seeds"])
            torch.testing.assert_close(entry["perplexity"], float(np.mean(entry["seeds"])))
        # at the trained length the length evaluation scores the validation set itself
        torch.testing.assert_close(r["length"][str(s.block_size)]["seeds"], e["seeds"])


def test_run_writes_report_and_resumes(tmp_path, corpus, keep_threads):
    s = _tiny(seeds=2)
    out = tmp_path / "austen"
    results = austen.run(out, s, corpus=corpus, log=lambda m: None)
    assert list(results) == list(s.models)
    assert json.loads((out / "results.json").read_text()) == results
    _check_equal_time(results, s)
    _check_equal_steps(results, s)
    report = (out / "report.md").read_text()
    for title in ("## Equal training time", "## Equal steps", "## Length generalisation"):
        assert title in report
    assert "| n/a: absolute positions only up to 12 |" in report
    rope = next(line for line in report.splitlines() if line.startswith("| Self-attention + R")
                and "±" in line and "n/a" not in line)
    assert rope.count("±") >= 1
    for png in ("curves_train.png", "curves_val.png", "val_vs_time.png", "curves_val_steps.png",
                "length.png"):
        assert (out / png).stat().st_size > 0

    # a second run resumes the finished runs: nothing is trained or evaluated again
    metrics = {p: p.read_text() for p in (out / "runs").rglob("metrics.jsonl")}
    assert len(metrics) == len(s.models) * (1 + s.seeds)
    again = austen.run(out, s, corpus=corpus, log=lambda m: None)
    assert _untimed(again) == _untimed(results)
    assert {p: p.read_text() for p in (out / "runs").rglob("metrics.jsonl")} == metrics

    # a third seed adds runs and keeps the first two
    more = austen.run(out, _tiny(seeds=3), corpus=corpus, log=lambda m: None)
    for label, r in more.items():
        assert r["equal_steps"]["seeds"][:2] == results[label]["equal_steps"]["seeds"]
        assert len(r["equal_steps"]["seeds"]) == 3

    # other settings in the same folder are refused
    with pytest.raises(ValueError, match="other settings"):
        austen.run(out, _tiny(budget_seconds=2.0), corpus=corpus, log=lambda m: None)
    with pytest.raises(ValueError, match="other settings"):
        austen.run(out, _tiny(steps=7, protocols=["steps"]), corpus=corpus, log=lambda m: None)


def test_equal_steps_alone_single_seed(tmp_path, corpus, keep_threads):
    s = _tiny(protocols=["steps"], models={"APE": "ape", "Translution": "translution"})
    results = austen.run(tmp_path, s, corpus=corpus, log=lambda m: None)
    assert set(results["Translution"]) == {"equal_steps", "length"}
    e = results["Translution"]["equal_steps"]
    assert e["perplexity_std"] is None and e["perplexity"] == e["seeds"][0]
    assert [results["APE"]["length"][str(n)]["perplexity"] is None for n in LENGTHS] == \
        [False, True, True]
    assert not (tmp_path / "runs" / "time").exists()
    assert "Equal training time" not in (tmp_path / "report.md").read_text()


def test_every_length_scores_the_same_tokens(corpus, tmp_path):
    s = _tiny()
    folder, _ = austen.prepare_tokens(s, corpus, tmp_path / "tokens")
    from translution.data.text import TokenDataset
    val = TokenDataset(folder, "val").data
    batches = austen._length_batches(val, s, torch.device("cpu"))
    assert sorted(batches) == LENGTHS
    per_chunk = {}
    for n, bs in batches.items():
        x = torch.cat([b[0] for b in bs])
        y = torch.cat([b[1] for b in bs])
        assert x.shape[1] == n and len(bs[0][0]) <= max(1, s.eval_batch_size * s.block_size // n)
        torch.testing.assert_close(x[:, 1:], y[:, :-1])
        per_chunk[n] = y.reshape(s.val_chunks, -1)              # windows are consecutive
    for n in LENGTHS:
        torch.testing.assert_close(per_chunk[n], per_chunk[max(LENGTHS)])


def test_interrupted_run_continues(tmp_path, corpus, monkeypatch, keep_threads):
    # a calibration of 1/40 of the budget plans 40 steps; the budget itself never binds
    monkeypatch.setattr(austen, "_step_time", lambda *args: 1000.0 / 40)
    s = _tiny(models={"APE": "ape"}, budget_seconds=1000.0, eval_points=4, protocols=["time"])
    out = tmp_path / "austen"

    def stop_after_first_chunk(message):
        if message.startswith("  APE: step"):
            raise _Interrupt

    with pytest.raises(_Interrupt):
        austen.run(out, s, corpus=corpus, log=stop_after_first_chunk)
    path = out / "runs" / "time" / "ape" / "metrics.jsonl"
    first = max(r["step"] for r in read_metrics(path))
    results = austen.run(out, s, corpus=corpus, log=lambda m: None)
    records = read_metrics(path)
    steps = [r["step"] for r in records if r["event"] == "train"]
    assert results["APE"]["steps"] == 40 and first == 10
    assert steps == sorted(set(steps))           # no step trained twice
    val_steps = [r["step"] for r in records if r["event"] == "eval"]
    assert val_steps == sorted(set(val_steps)) and val_steps[0] == 0
    assert all(r["set"] == "val" for r in records if r["event"] == "eval")


def test_cli_seeds(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(austen, "run", lambda out, settings: seen.update(s=settings))
    assert cli.main(["experiment", "austen", "--out", str(tmp_path), "--seeds", "3"]) == 0
    assert seen["s"].seeds == 3 and seen["s"].steps == austen.QUICK.steps
    assert cli.main(["experiment", "austen", "--seeds", "0"]) == 2


@pytest.mark.parametrize("change, match", [
    (dict(tokenizer="bpe"), "tokenizer"),
    (dict(models={"x": "conv"}), r"models.x: expected one of \[.ape.,"),
    (dict(budget_seconds=0.0), "budget_seconds"),
    (dict(model_overrides={"translution": {"block_size": 8}}), "block_size"),
    (dict(model_overrides={"alpha": {"max_distance": 8}}), "max_distance"),
    (dict(prompt="Zebra!"), "prompt"),
    (dict(protocols=[]), "protocols"),
    (dict(protocols=["time", "time"]), "protocols"),
    (dict(protocols=["epochs"]), "protocols"),
    (dict(eval_lengths=[12, 0]), r"eval_lengths\[1\] must be >= 1"),
    (dict(seeds=0), "seeds"),
    (dict(eval_lengths=[12, 100_000]), "evaluation length 100000"),
])
def test_invalid_settings(tmp_path, corpus, change, match):
    with pytest.raises(ValueError, match=match):
        austen.run(tmp_path, _tiny(**change), corpus=corpus, log=lambda m: None)


def test_invalid_corpus(tmp_path):
    with pytest.raises(ValueError, match="corpus"):
        austen.run(tmp_path, _tiny(), corpus=(["only train"],), log=lambda m: None)
