"""Exact resume: an interrupted-and-resumed run reproduces an uninterrupted one bit for bit
(on CPU; tests/train/test_cuda.py covers CUDA)."""

from __future__ import annotations

import pytest
import torch

from translution.train import (ClassificationTask, DatasetBatches, LanguageModelTask,
                               WindowBatches, fit, load_checkpoint, load_config, read_metrics,
                               token_windows)

from .helpers import NoisyDataset, TinyClassifier, TinyLM, mixup, token_array

CLS_RECIPES = {
    # ImageNet-like: AdamW, cosine per epoch with warm-up, clipping, MixUp, dropout
    "adamw-cosine-epoch": (["optim.name=adamw", "optim.lr=1e-2", "optim.weight_decay=0.05",
                            "optim.grad_clip=1.0", "schedule.name=cosine", "schedule.per=epoch",
                            "schedule.warmup=1"], 0),
    # MNIST recipe: Adadelta lr 1.0, StepLR(1, 0.7) per epoch; loading in worker processes
    "adadelta-step-epoch": (["optim.name=adadelta", "optim.lr=1.0", "schedule.name=step",
                             "schedule.per=epoch", "schedule.gamma=0.7"], 2),
}


class _Interrupt(Exception):
    pass


def _cls_run(out_dir, recipe, *, stop_after=None, raise_on=None, resume=True, named=False):
    args, workers = CLS_RECIPES[recipe]
    cfg = load_config(None, args + ["train.epochs=3", "train.log_every=4", "train.eval_every=5",
                                    "train.checkpoint_every=8", "train.seed=3",
                                    "train.device=cpu"])
    torch.manual_seed(0)
    model = TinyClassifier(dropout=0.2)
    train = DatasetBatches(NoisyDataset(40), 6, seed=11, batch_transform=mixup,
                           num_workers=workers)                       # 7 steps per epoch
    val = DatasetBatches(NoisyDataset(20, seed=5), 8, shuffle=False)
    val = {"test": val} if named else val                     # named: fit(eval_sets=...)
    return _run(model, ClassificationTask(), train, cfg, val, out_dir, stop_after, raise_on,
                resume)


def _lm_run(out_dir, *, stop_after=None, raise_on=None, resume=True):
    cfg = load_config(None, ["train.max_steps=15", "train.log_every=4", "train.eval_every=5",
                             "train.checkpoint_every=4", "train.seed=9", "optim.lr=1e-2",
                             "train.device=cpu",
                             "optim.grad_clip=0.5", "schedule.name=cosine", "schedule.warmup=3"])
    torch.manual_seed(0)
    model = TinyLM(dropout=0.2)
    tokens = token_array(400)
    train = WindowBatches(token_windows(tokens[:300], 8), 4, 6, seed=2)   # 6 steps per epoch
    val = WindowBatches(token_windows(tokens[300:], 8), 4, 2, seed=77)
    return _run(model, LanguageModelTask(), train, cfg, val, out_dir, stop_after, raise_on,
                resume)


def _run(model, task, train, cfg, val, out_dir, stop_after, raise_on, resume):
    losses: dict[int, float] = {}

    def callback(event):
        if event["event"] == "step":
            losses[event["step"]] = event["loss"]
        if raise_on is not None and (event["event"], event["step"]) == raise_on:
            raise _Interrupt

    try:
        sets = {"eval_sets": val} if isinstance(val, dict) else {"eval_batches": val}
        summary = fit(model, task, train, cfg, out_dir=out_dir, resume=resume,
                      callbacks=[callback], stop_after_steps=stop_after, **sets)
    except _Interrupt:
        summary = None
    return losses, model, summary


def _records(path):
    return [{k: v for k, v in r.items() if k not in ("time", "step_time")}
            for r in read_metrics(path / "metrics.jsonl")]


def _assert_same_run(ref_dir, ref_losses, ref_model, out_dir, losses, model):
    assert losses == ref_losses                                        # bit-for-bit floats
    for (k, a), b in zip(ref_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    assert _records(out_dir) == _records(ref_dir)
    a, b = load_checkpoint(ref_dir / "last.pt"), load_checkpoint(out_dir / "last.pt")
    assert a["step"] == b["step"] and a["best"] == b["best"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k])


@pytest.mark.parametrize("recipe", list(CLS_RECIPES))
def test_classification_resume_mid_epoch_is_exact(tmp_path, recipe):
    ref_losses, ref_model, ref_summary = _cls_run(tmp_path / "ref", recipe)
    assert ref_summary["steps"] == 21 and len(ref_losses) == 21

    # stop after 10 steps (epoch 1, batch 3), then resume in a fresh process-like setting
    out = tmp_path / "stopped"
    first, _, summary = _cls_run(out, recipe, stop_after=10)
    assert summary["stopped_early"] and summary["steps"] == 10
    assert load_checkpoint(out / "last.pt")["step"] == 10
    second, model, summary = _cls_run(out, recipe)
    assert summary["resumed_from_step"] == 10 and min(second) == 11
    _assert_same_run(tmp_path / "ref", ref_losses, ref_model, out, first | second, model)
    assert summary["eval"] == ref_summary["eval"] and summary["best"] == ref_summary["best"]



def test_resume_from_a_checkpoint_written_before_the_first_evaluation(tmp_path):
    """A run with a named evaluation set, stopped before its first evaluation (step 5),
    resumes, evaluates and ends exactly as the uninterrupted run."""
    recipe = "adamw-cosine-epoch"
    ref_losses, ref_model, ref_summary = _cls_run(tmp_path / "ref", recipe, named=True)
    out = tmp_path / "early"
    first, _, _ = _cls_run(out, recipe, stop_after=3, named=True)
    second, model, summary = _cls_run(out, recipe, named=True)
    assert summary["resumed_from_step"] == 3
    _assert_same_run(tmp_path / "ref", ref_losses, ref_model, out, first | second, model)
    assert summary["eval"] == ref_summary["eval"] and summary["best"] == ref_summary["best"]

def test_classification_resume_after_crash_drops_unsaved_records(tmp_path):
    recipe = "adamw-cosine-epoch"
    ref_losses, ref_model, _ = _cls_run(tmp_path / "ref", recipe)
    out = tmp_path / "crashed"
    # crash right after the evaluation at step 20: the last checkpoint is at step 16, and the
    # train/eval records of step 20 are already in metrics.jsonl
    first, _, summary = _cls_run(out, recipe, raise_on=("eval", 20))
    assert summary is None and max(first) == 20
    assert max(r["step"] for r in read_metrics(out / "metrics.jsonl")) == 20
    assert load_checkpoint(out / "last.pt")["step"] == 16
    second, model, summary = _cls_run(out, recipe)
    assert min(second) == 17
    _assert_same_run(tmp_path / "ref", ref_losses, ref_model, out,
                     {k: v for k, v in first.items() if k <= 16} | second, model)


def test_language_model_resume_is_exact(tmp_path):
    ref_losses, ref_model, ref_summary = _lm_run(tmp_path / "ref")
    assert len(ref_losses) == 15
    out = tmp_path / "crashed"
    # an exception at step 10 (epoch 1, batch 4); last checkpoint at step 8
    first, _, _ = _lm_run(out, raise_on=("step", 10))
    assert load_checkpoint(out / "last.pt")["step"] == 8
    second, model, summary = _lm_run(out)
    assert min(second) == 9
    _assert_same_run(tmp_path / "ref", ref_losses, ref_model, out,
                     {k: v for k, v in first.items() if k <= 8} | second, model)
    assert summary["eval"] == ref_summary["eval"]

    # a finished run resumes as a no-op; resume=False starts afresh
    again, _, summary = _lm_run(out)
    assert again == {} and summary["steps"] == 15 and summary["eval"] == ref_summary["eval"]
    fresh, _, summary = _lm_run(out, resume=False, stop_after=4)
    assert sorted(fresh) == [1, 2, 3, 4] and summary["resumed_from_step"] is None
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [4]


def test_resume_from_explicit_path_and_bad_file(tmp_path):
    _lm_run(tmp_path / "a", stop_after=5)
    losses, _, summary = _lm_run(tmp_path / "b", resume=tmp_path / "a" / "last.pt")
    assert summary["resumed_from_step"] == 5 and min(losses) == 6
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.pt.*corrupt or truncated"):
        _lm_run(tmp_path / "c", resume=tmp_path / "bad.pt")
