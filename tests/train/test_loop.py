"""fit(): learning, outputs, schedules, precision, callbacks and the tasks themselves."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from translution.train import (ClassificationTask, DatasetBatches, LanguageModelTask,
                               WindowBatches, fit, load_checkpoint, load_config, read_metrics,
                               token_windows, topk_correct)

from .helpers import NoisyDataset, TinyClassifier, TinyLM, mixup, token_array


def _cls_setup(**overrides):
    torch.manual_seed(0)
    model = TinyClassifier(hidden=32, dropout=0.0)
    train = DatasetBatches(NoisyDataset(96, seed=0, noise=0.05), 16, seed=1)
    val = DatasetBatches(NoisyDataset(64, seed=1, noise=0.0), 32, shuffle=False)
    args = ["train.epochs=6", "train.log_every=3", "train.eval_every_epochs=2",
            "optim.lr=3e-2", "optim.weight_decay=0.01", "schedule.name=cosine",
            "model.name=vit_micro_ape"]
    cfg = load_config(None, args + [f"{k}={v}" for k, v in overrides.items()])
    return model, train, val, cfg


def test_classification_learns_and_writes_outputs(tmp_path):
    model, train, val, cfg = _cls_setup()
    task = ClassificationTask()
    before = task.evaluate(model, val.batches(0))
    summary = fit(model, task, train, cfg, val, out_dir=tmp_path)

    assert summary["steps"] == summary["total_steps"] == 36 and summary["epochs"] == 6.0
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["eval"]["top1"] > before["top1"] + 20 and summary["eval"]["top1"] > 70
    assert summary["eval"]["loss"] < before["loss"]
    assert summary["seconds"] > 0 and not summary["stopped_early"]

    records = read_metrics(tmp_path / "metrics.jsonl")
    train_recs = [r for r in records if r["event"] == "train"]
    eval_recs = [r for r in records if r["event"] == "eval"]
    assert [r["step"] for r in train_recs] == list(range(3, 37, 3))
    assert [r["step"] for r in eval_recs] == [12, 24, 36]
    assert [r["epoch"] for r in eval_recs] == [2.0, 4.0, 6.0]
    for r in train_recs:
        assert {"step", "epoch", "lr", "loss", "time"} <= set(r)
    for r in eval_recs:
        assert {"step", "epoch", "time", "loss", "top1", "top5", "samples"} <= set(r)
        assert r["samples"] == 64
    assert train_recs[-1]["loss"] < train_recs[0]["loss"]
    assert train_recs[-1]["lr"] < 3e-2 * 0.01                      # cosine reached ~0

    saved = load_config(tmp_path / "config.yaml")
    assert saved == dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, out_dir=str(tmp_path)))
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 36 and last["epoch"] == 6
    assert last["config"]["model"] == {"name": "vit_micro_ape"}
    best = load_checkpoint(tmp_path / "best.pt")
    top1s = [r["top1"] for r in eval_recs]
    assert best["best"]["value"] == max(top1s) and best["best"]["metric"] == "top1"
    assert best["step"] == eval_recs[top1s.index(max(top1s))]["step"]
    assert summary["best"] == last["best"]


def test_language_model_learns():
    torch.manual_seed(0)
    model = TinyLM(dim=24, dropout=0.0)
    tokens = token_array(800)
    train = WindowBatches(token_windows(tokens[:600], 16), 8, 20, seed=0)
    val = WindowBatches(token_windows(tokens[600:], 16), 8, 4, seed=123)
    cfg = load_config(None, ["train.max_steps=60", "train.log_every=10", "train.eval_every=30",
                             "optim.lr=2e-2", "optim.grad_clip=1.0", "schedule.name=cosine",
                             "schedule.warmup=5"])
    task = LanguageModelTask()
    before = task.evaluate(model, val.batches(0))
    events = []
    summary = fit(model, task, train, cfg, val, callbacks=[events.append])
    after = summary["eval"]
    assert after["loss"] < before["loss"] - 1.0
    assert after["ppl"] == pytest.approx(math.exp(after["loss"]))
    assert after["tokens"] == 4 * 8 * 16
    assert summary["epochs"] == 3.0 and summary["out_dir"] is None
    assert [e["step"] for e in events if e["event"] == "eval"] == [30, 60]
    train_recs = [e for e in events if e["event"] == "train"]
    assert all("grad_norm" in r for r in train_recs)
    assert train_recs[0]["lr"] < 2e-2                               # still warming up at step 10
    assert summary["best"]["metric"] == "loss" and summary["best"]["mode"] == "min"


def test_mnist_recipe_adadelta_steplr_per_epoch():
    torch.manual_seed(0)
    model = TinyClassifier()
    train = DatasetBatches(NoisyDataset(20), 5)                      # 4 steps per epoch
    cfg = load_config(None, ["train.epochs=3", "train.log_every=1", "optim.name=adadelta",
                             "optim.lr=1.0", "schedule.name=step", "schedule.per=epoch",
                             "schedule.step_size=1", "schedule.gamma=0.7"])
    events = []
    fit(model, ClassificationTask(), train, cfg, callbacks=[events.append])
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 12
    for e in steps:
        epoch = (e["step"] - 1) // 4
        assert e["lr"] == pytest.approx(0.7 ** epoch)


def test_bf16_clip_csv_soft_targets(tmp_path):
    torch.manual_seed(0)
    model = TinyClassifier()
    train = DatasetBatches(NoisyDataset(32), 8, batch_transform=mixup)
    val = [(torch.randn(10, 8), torch.randint(0, 6, (10,)))]         # a plain list works too
    cfg = load_config(None, ["train.max_steps=6", "train.log_every=2", "train.precision=bf16",
                             "optim.grad_clip=0.5", "train.csv=true", "train.eval_every=3"])
    summary = fit(model, ClassificationTask(label_smoothing=0.1), train, cfg, val,
                  out_dir=tmp_path)
    assert math.isfinite(summary["train"]["loss"]) and summary["eval"]["samples"] == 10
    assert (tmp_path / "metrics_train.csv").read_text().startswith("step,epoch,lr,loss")
    assert "top1" in (tmp_path / "metrics_eval.csv").read_text().splitlines()[0]
    assert all(r["grad_norm"] >= 0 for r in read_metrics(tmp_path / "metrics.jsonl", "train"))


def test_no_out_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, train, val, cfg = _cls_setup(**{"train.epochs": 1})
    events = []
    fit(model, ClassificationTask(), train, cfg, callbacks=[events.append])
    assert list(tmp_path.iterdir()) == []
    assert not any(e["event"] == "checkpoint" for e in events)


def test_classification_task_semantics():
    task = ClassificationTask()
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 2.0, 0.0]])
    model = torch.nn.Identity()
    hard = torch.tensor([0, 1, 0])
    metrics = task.evaluate(model, [(logits, hard)])
    assert metrics["top1"] == pytest.approx(100 / 3)
    assert metrics["top5"] == 100.0                                  # k > classes counts all
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(logits, hard)))
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5], [0.2, 0.2, 0.6]])
    loss, _ = task.loss(model, (logits, soft))
    manual = -(soft * logits.log_softmax(1)).sum(1).mean()
    assert float(loss) == pytest.approx(float(manual))
    assert topk_correct(logits, soft, (1, 2)) == {1: 1, 2: 2}        # soft targets use argmax
    with pytest.raises(ValueError, match=r"targets must be integer \(B,\)"):
        task.loss(model, (logits, torch.tensor([0, 1])))
    with pytest.raises(ValueError, match=r"\(B, C\) logits"):
        task.loss(model, (torch.zeros(3), hard))
    with pytest.raises(TypeError, match="inputs, targets"):
        task.loss(model, (logits,))
    with pytest.raises(ValueError, match="no samples"):
        task.evaluate(model, [])


def test_language_model_task_semantics():
    task = LanguageModelTask(ignore_index=-1)
    torch.manual_seed(0)
    model = TinyLM(dropout=0.0)
    tokens = torch.randint(0, 17, (2, 6))
    loss_a, _ = task.loss(model, tokens)
    loss_b, _ = task.loss(model, (tokens[:, :-1], tokens[:, 1:]))
    assert torch.equal(loss_a, loss_b)
    y = tokens[:, 1:].clone()
    y[0, :3] = -1
    metrics = task.evaluate(model, [(tokens[:, :-1], y)])
    assert metrics["tokens"] == 7
    with torch.no_grad():
        logits = model(tokens[:, :-1])
    mask = y != -1
    manual = F.cross_entropy(logits[mask], y[mask])
    assert metrics["loss"] == pytest.approx(float(manual), rel=1e-5)
    with pytest.raises(ValueError, match=r"\(B, T\+1\)"):
        task.loss(model, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T, V\) logits"):
        task.loss(torch.nn.Identity(), tokens)


class _Empty:
    def __len__(self):
        return 0

    def batches(self, epoch, start=0):
        return iter(())


class _Liar:
    def __len__(self):
        return 3

    def batches(self, epoch, start=0):
        return iter(())


def test_fit_argument_errors():
    model = TinyClassifier()
    cfg = load_config(None, ["train.max_steps=2"])
    task = ClassificationTask()
    with pytest.raises(ValueError, match="0 batches per epoch"):
        fit(model, task, _Empty(), cfg)
    with pytest.raises(ValueError, match=r"yielded no batch although len\(train_batches\) = 3"):
        fit(model, task, _Liar(), cfg)
    with pytest.raises(TypeError, match="RunConfig"):
        fit(model, task, _Liar(), cfg.train)
    with pytest.raises(TypeError, match="batches"):
        fit(model, task, [1, 2], cfg)
    bad = load_config(None, ["train.max_steps=2", "train.best_metric=f1"])
    with pytest.raises(ValueError, match="'f1'.*best_mode"):
        fit(model, task, DatasetBatches(NoisyDataset(8), 4), bad)


def test_time_budget_named_sets_and_eval_at_start(tmp_path):
    import time
    model, train, val, cfg = _cls_setup(**{"train.max_steps": 1000, "train.log_every": 1000,
                                           "train.time_budget_s": 0.2,
                                           "train.eval_at_start": "true"})
    test = DatasetBatches(NoisyDataset(16, seed=7, noise=0.0), 8, shuffle=False)

    def slow(event):                                   # part of the timed training step
        if event["event"] == "step":
            time.sleep(0.03)

    summary = fit(model, ClassificationTask(), train, cfg, eval_sets={"val": val, "test": test},
                  out_dir=tmp_path, callbacks=[slow])
    steps = summary["steps"]
    assert summary["budget_spent"] and not summary["stopped_early"] and 1 <= steps < 1000
    assert summary["seconds"] >= 0.2
    evals = read_metrics(tmp_path / "metrics.jsonl", "eval")
    assert [(r["set"], r["step"]) for r in evals] == [("val", 0), ("test", 0), ("val", steps),
                                                      ("test", steps)]
    assert evals[0]["time"] == 0.0 and evals[-1]["samples"] == 16
    assert summary["eval"] == {k: v for k, v in evals[2].items()
                               if k not in ("event", "set", "step", "epoch", "time")}
    assert set(summary["evals"]) == {"val", "test"}
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")] == [steps]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == steps
    # the budget is spent: a resume trains no further step and evaluates nothing new
    events = []
    again = fit(model, ClassificationTask(), train, cfg, eval_sets={"val": val, "test": test},
                out_dir=tmp_path, callbacks=[events.append])
    assert again["steps"] == steps and events == [] and again["evals"] == summary["evals"]
    with pytest.raises(ValueError, match="not both"):
        fit(model, ClassificationTask(), train, cfg, val, eval_sets={"val": val})
