"""Self-describing checkpoints: every checkpoint rebuilds its model (and, for text, its tokenizer)
without the run's data or the code that trained it."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch
from torch.testing import assert_close

from translution import recipes
from translution.cli import main
from translution.models import ATTENTION_KINDS, create_model
from translution.train import load_checkpoint, save_checkpoint

SMALL = dict(dim=16, depth=2, heads=2, dim_head=8, rank=2)


def _inputs(model):
    g = torch.Generator().manual_seed(0)
    if model.config.family == "gpt":
        return torch.randint(0, model.config.vocab_size, (2, model.config.block_size), generator=g)
    return torch.randn(2, 1, *model.config.image_hw, generator=g)


@pytest.mark.parametrize("family", ["vit", "gpt"])
@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_every_model_kind_round_trips(tmp_path, family, kind):
    torch.manual_seed(0)
    extra = (dict(vocab_size=11, block_size=6) if family == "gpt" else
             dict(image_size=8, patch_size=4, in_channels=1, num_classes=3))
    model = create_model(f"{family}_micro_{kind}", **SMALL, **extra).eval()
    path = save_checkpoint(tmp_path / "m.pt", model=model, step=1)
    assert load_checkpoint(path)["model_config"] == model.config.to_dict()
    rebuilt, _, _ = recipes.model_for_checkpoint(path)
    assert rebuilt.config == model.config
    x = _inputs(model)
    with torch.no_grad():
        assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_old_checkpoint_without_model_config(tmp_path):
    """Files from before model_config fall back to the run config's model section."""
    torch.manual_seed(0)
    model = create_model("vit_micro_ape", image_size=8, patch_size=4, in_channels=1).eval()
    config = {"model": {"name": "vit_micro_ape", "image_size": 8, "patch_size": 4,
                        "in_channels": 1}}
    path = save_checkpoint(tmp_path / "old.pt", model=model, config=config)
    obj = torch.load(path, weights_only=True)
    del obj["model_config"], obj["tokenizer"]
    torch.save(obj, path)
    rebuilt, _, _ = recipes.model_for_checkpoint(path)
    x = _inputs(model)
    with torch.no_grad():
        assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    torch.save({**obj, "config": None}, path)
    with pytest.raises(ValueError, match="neither a model_config nor a run config"):
        recipes.model_for_checkpoint(path)


WORDS = "it is a truth universally acknowledged that a single man in want of a wife".split()


def test_austen_checkpoint_generates_without_its_data(tmp_path, capsys):
    from translution.experiments import austen
    rng = random.Random(0)
    text = lambda n: " ".join(rng.choice(WORDS) for _ in range(n)) + ". It is a truth."
    corpus = [text(300), text(300)], [text(120)]
    s = dataclasses.replace(
        austen.QUICK, block_size=12, batch_size=4, dim=16, depth=1, heads=2, dim_head=8,
        model_overrides={}, models={"alpha": "alpha"}, budget_seconds=0.5,
        calibration_steps=1, eval_points=1, val_chunks=6, eval_lengths=[12], eval_batch_size=3,
        samples=1, sample_tokens=15, temperature=0.0, log_every=5, threads=1, protocols=["time"])
    results = austen.run(tmp_path / "out", s, corpus=corpus, log=lambda m: None)
    ckpt = tmp_path / "out" / "runs" / "time" / "alpha" / "last.pt"
    assert load_checkpoint(ckpt)["tokenizer"]["kind"] == "char"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ckpt)]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] > 0
    for folder in (tmp_path / "out" / "data").rglob("*.bin"):
        folder.unlink()                                  # generating needs no data folder
    assert main(["generate", "--checkpoint", str(ckpt), "--prompt", s.prompt,
                 "--max-new-tokens", "15", "--temperature", "0"]) == 0
    assert capsys.readouterr().out[:-1] == results["alpha"]["sample"]


def test_dynamic_mnist_checkpoint_rebuilds(tmp_path, capsys, write_mnist):
    from translution.experiments import dynamic_mnist as exp
    root = write_mnist(tmp_path / "mnist", (64, 32))
    s = dataclasses.replace(exp.QUICK, train_size=64, test_size=32, epochs=1, batch_size=32,
                            depth=1, heads=2, dim_head=8, mlp_dim=16,
                            sweep_size=0, models={"t": {"label": "T", "kind": "translution"}},
                            train_settings=["static"], test_placements=["static"])
    exp.run(tmp_path / "out", s, data_root=str(root), log=lambda m: None)
    ckpt = tmp_path / "out" / "runs" / "static" / "t" / "seed0" / "last.pt"
    rebuilt, _, obj = recipes.model_for_checkpoint(ckpt)
    reference = exp.build_model(s, "t")
    reference.load_state_dict(obj["model"])
    x = torch.randn(3, 1, s.canvas, s.canvas)
    with torch.no_grad():
        assert_close(rebuilt(x), reference.eval()(x), rtol=0, atol=0)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ckpt), f"data.root={root}",
                 "data.test_size=32"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 32
