"""End to end through the command line (README's command table): `translution train` learns
learnable fake data, and `translution eval` of the run's checkpoint reproduces the run's last
logged evaluation exactly."""

import json

import pytest
import torch

from translution.cli import main
from torchvision.datasets.mnist import read_label_file

SIDES = (4, 10, 16, 22)              # label k: one bright square of side SIDES[k]; chance 25 %
IMAGE_ARGS = ["--config", "configs/mnist.yaml", "model.image_size=28", "model.patch_size=7",
              "model.in_channels=1", "train.batch_size=32", "train.eval_batch_size=48",
              "optim.name=adamw", "optim.lr=3e-3", "train.log_every=8"]


@pytest.fixture(scope="module")
def squares(tmp_path_factory, write_mnist):
    """An MNIST folder whose four classes differ only in the size of a randomly placed square."""
    return write_mnist(tmp_path_factory.mktemp("squares"), (512, 96), SIDES)


def _records(run, event):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def _train_then_eval(capsys, run, args):
    """`translution train ARGS`, then `translution eval` of its last.pt; returns the printed
    metrics and the run's last logged evaluation (its metric fields only)."""
    assert main(["train", *args, f"train.out_dir={run}"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run / "last.pt")]) == 0
    printed = json.loads(capsys.readouterr().out)
    last = _records(run, "eval")[-1]
    logged = {k: v for k, v in last.items() if k not in ("event", "step", "epoch", "time")}
    return printed, logged


@pytest.mark.slow
def test_image_run_learns_and_eval_reproduces_its_last_evaluation(squares, tmp_path, capsys):
    run = tmp_path / "run"
    printed, logged = _train_then_eval(capsys, run, [
        *IMAGE_ARGS, "model.name=vit_micro_ape", f"data.root={squares}", "train.epochs=5",
        "schedule.name=cosine", "schedule.per=step"])
    assert printed == logged                                         # exactly, every metric
    assert printed["samples"] == 96
    # learned: far above the 25 % of chance (and of the largest class), training loss falling
    counts = torch.bincount(read_label_file(str(squares / "t10k-labels-idx1-ubyte")).long())
    assert printed["top1"] >= 60 > 100 * counts.max().item() / counts.sum().item()
    losses = [r["loss"] for r in _records(run, "train")]
    assert len(losses) == 10 and losses[-1] < 0.6 * losses[0]
    evals = [r["loss"] for r in _records(run, "eval")]
    assert evals[-1] < evals[0]


@pytest.mark.parametrize("model, precision", [
    ("vit_micro_translution", "fp32"),
    ("vit_micro_ape", "bf16"),                  # eval runs under the run's autocast too
    ("vit_micro_translution", "bf16"),          # bf16 activations meet float32 banks
])
def test_eval_reproduces_the_logged_evaluation(squares, tmp_path, capsys, model, precision):
    printed, logged = _train_then_eval(capsys, tmp_path / "run", [
        *IMAGE_ARGS, f"model.name={model}", f"data.root={squares}", "train.max_steps=6",
        f"train.precision={precision}"])
    assert printed == logged


def test_text_run_learns_and_eval_reproduces_its_last_evaluation(tmp_path, capsys, char_corpus):
    corpus, text = char_corpus
    run = tmp_path / "gpt"
    printed, logged = _train_then_eval(capsys, run, [
        "model.name=gpt_micro_ape", "model.block_size=16", "model.depth=1",
        "data.dataset=text", f"data.dir={corpus}", "data.steps_per_epoch=10", "data.eval_iters=2",
        "train.max_steps=20", "train.batch_size=8", "train.log_every=5", "train.eval_every=10",
        "optim.name=adamw", "optim.lr=1e-2"])
    assert printed == logged
    evals = [r["loss"] for r in _records(run, "eval")]
    losses = [r["loss"] for r in _records(run, "train")]
    assert len(evals) == 2 and evals[-1] < evals[0] and losses[-1] < 0.8 * losses[0]
    assert printed["ppl"] < 0.5 * len(set(text))                       # far below uniform
