"""The Dynamic MNIST experiment end to end on tiny data: the quick preset's code path with seeds,
the sweep, resuming, the report, `translution eval` on its checkpoints, and the circular arm."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from translution.cli import main
from translution.data.dynamic_mnist import DynamicMNIST
from translution.experiments import dynamic_mnist as exp
from translution.train import load_checkpoint

TINY = dict(train_size=64, test_size=24, sweep_size=8, epochs=1, batch_size=32,
            eval_batch_size=16, dim=16, depth=1, heads=2, dim_head=8, mlp_dim=16, rank=2,
            warmup_steps=1, threads=1)


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory, write_mnist):
    return write_mnist(tmp_path_factory.mktemp("mnist"), (64, 24))


def test_presets_are_valid_and_quick_is_the_default():
    assert exp.QUICK == exp.DynamicMNISTSettings()
    assert [a["kind"] for a in exp.QUICK.models.values()] == ["ape", "bias", "translution",
                                                              "alpha"]
    kinds = {(a["kind"], a.get("circular", False), a.get("parameterization"), a.get("init"),
              a.get("symmetric", False), a.get("canvas")) for a in exp.FULL.models.values()}
    assert ("translution", True, None, None, False, None) in kinds
    assert ("translution", False, "residual", None, False, None) in kinds
    assert ("translution", False, None, "tied", False, None) in kinds
    assert ("translution", False, None, None, True, None) in kinds
    assert ("translution", False, None, None, False, 56) in kinds
    for run_id in exp.FULL.models:                       # every arm builds
        exp._model_section(exp.FULL, run_id)


@pytest.mark.parametrize("models, match", [
    ({"a": {"label": "A", "kind": "nope"}}, "kind must be one of"),
    ({"A": {"label": "A", "kind": "ape"}}, "run ids name folders"),
    ({"a": {"label": "A", "kind": "ape", "image_size": 28}}, "fixed by the experiment"),
    ({"a": {"label": "A", "kind": "ape", "canvas": 45}}, "divisible by patch"),
    ({"a": {"label": "A", "kind": "ape", "wings": 2}}, "wings"),
    ({"a": {"label": "A", "kind": "ape"}, "b": {"label": "A", "kind": "bias"}}, "own label"),
])
def test_bad_arms_are_refused(models, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(exp.QUICK, models=models)


def test_settings_are_strict():
    from translution.train.config import replace_settings
    with pytest.raises(ValueError, match="epoch"):
        replace_settings(exp.QUICK, ["epoch=3"])
    with pytest.raises((TypeError, ValueError)):
        replace_settings(exp.QUICK, ["seeds=0"])
    with pytest.raises((TypeError, ValueError)):
        replace_settings(exp.QUICK, ["test_placements=[static, sideways]"])
    assert replace_settings(exp.QUICK, ["seeds=3"]).seeds == 3


def test_sweep_shifts_and_directions():
    shifts = exp.sweep_shifts(42, 7)
    assert (0, 0) in shifts and (-7, 7) in shifts and (7, 7) in shifts
    assert {(0, t) for t in range(-7, 8)} <= set(shifts)
    assert all(abs(dr) <= 7 and abs(dc) <= 7 for dr, dc in shifts)
    assert len(shifts) == 9 + 4 * 6                     # 3×3 patch grid + 1..6 px on 4 axes
    assert max(abs(dr) for dr, _ in exp.sweep_shifts(56, 7)) == 14
    assert exp.direction_of(-7, 0) == "up" and exp.direction_of(7, -7) == "down-left"
    assert exp.direction_of(0, 0) == "none"


def test_quick_code_path_with_seeds_sweep_and_resume(tmp_path, mnist_root):
    s = dataclasses.replace(exp.QUICK, seeds=2, **TINY)
    logs = []
    results = exp.run(tmp_path / "out", s, data_root=str(mnist_root), log=logs.append)
    labels = [arm["label"] for arm in s.models.values()]
    assert list(results) == labels + ["sweep"]
    for label in labels:
        row = results[label]
        assert set(row) == {exp.setting_name("static", p) for p in s.test_placements}
        for cell in row.values():
            assert len(cell["seeds"]) == 2 and all(0 <= a <= 1 for a in cell["seeds"])
            assert cell["accuracy"] == pytest.approx(sum(cell["seeds"]) / 2)
            assert cell["accuracy_std"] >= 0 and cell["parameters"] > 0 and cell["seconds"] >= 0
        sweep = results["sweep"]["train static"][label]
        assert set(sweep) == {f"{dr},{dc}" for dr, dc in exp.sweep_shifts(42, 7)}
        assert len(sweep["0,0"]["seeds"]) == 2
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Shift sweep, train static" in report and "± " in report
    for name in ("accuracy.png", "sweep_static.png", "directions_static.png", "curves.png",
                 "kernels_translution.png", "kernels_alpha.png", "attention.png",
                 "position_signal.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
        assert f"![{name}]({name})" in report
    assert any("arm time" in line for line in logs)
    signals = json.loads((tmp_path / "out" / "position_signal.json").read_text())
    assert list(signals) == labels and all(len(v) == 2 and len(v[0]) == s.depth
                                           for v in signals.values())
    assert "Position signal on a blank canvas" in report
    # a second invocation reads every finished run back
    logs.clear()
    again = exp.run(tmp_path / "out", s, data_root=str(mnist_root), log=logs.append)
    assert again == results
    assert sum("done earlier" in line for line in logs) == 2 * len(labels)


def test_eval_round_trips_every_checkpoint_kind(tmp_path, mnist_root, capsys):
    s = dataclasses.replace(exp.QUICK, **{**TINY, "sweep_size": 0}, test_placements=["static"],
                            models={**exp.QUICK.models,
                                    "translution-circular": {"label": "T circular",
                                                             "kind": "translution",
                                                             "circular": True},
                                    "alpha-residual": {"label": "α residual", "kind": "alpha",
                                                       "parameterization": "residual"},
                                    "bias-56": {"label": "bias 56", "kind": "bias",
                                                "canvas": 56}})
    results = exp.run(tmp_path / "out", s, data_root=str(mnist_root), log=lambda m: None)
    for run_id, arm in s.models.items():
        ckpt = tmp_path / "out" / "runs" / "static" / run_id / "seed0" / "last.pt"
        assert load_checkpoint(ckpt)["model_config"]["image_size"] in (s.arm_canvas(run_id),
                                                                    [s.arm_canvas(run_id)] * 2)
        capsys.readouterr()
        assert main(["eval", "--checkpoint", str(ckpt), f"data.root={mnist_root}"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["samples"] == s.test_size
        expected = results[arm["label"]][exp.setting_name("static", "static")]["accuracy"]
        assert metrics["top1"] / 100 == pytest.approx(expected)


@pytest.mark.parametrize("kind", ["translution", "alpha"])
def test_circular_arm_keeps_its_static_accuracy_on_rolled_digits(kind, mnist_root):
    s = dataclasses.replace(exp.QUICK, **TINY, models={
        "c": {"label": "circular", "kind": kind, "circular": True}})
    torch.manual_seed(0)
    model = exp.build_model(s, "c").eval()
    from translution.data.mnist import load_mnist
    images, labels = load_mnist("test", root=str(mnist_root))
    static = DynamicMNIST(images, labels, placement="static")
    rolled = DynamicMNIST(images, labels, placement="roll", seed=3)
    assert bool(((rolled.offsets() - 7) % 42 != 0).any())   # the rolls are not all trivial
    with torch.no_grad():
        a = model(static.get_batch(torch.arange(len(static)))[0])
        b = model(rolled.get_batch(torch.arange(len(rolled)))[0])
    assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert exp.accuracy(model, rolled) == exp.accuracy(model, static)


RUN_3SEEDS = Path("/work/main/runs/dynamic-mnist-3seeds/runs/static/ape/seed0")


@pytest.mark.skipif(not (RUN_3SEEDS / "result.json").is_file(),
                    reason="needs a finished run of the quick protocol made by earlier code")
def test_runs_of_earlier_code_are_read_back(tmp_path):
    seed0 = tmp_path / "runs" / "static" / "ape" / "seed0"
    shutil.copytree(RUN_3SEEDS, seed0)                   # the source stays untouched
    before = {p.name: p.read_bytes() for p in seed0.iterdir()}
    s = dataclasses.replace(exp.QUICK, models={"ape": exp.QUICK.models["ape"]}, threads=1)
    logs = []
    results = exp.run(tmp_path, s, log=logs.append)
    assert any("done earlier" in line for line in logs)
    assert not any("arm time" in line for line in logs)
    old = json.loads(before["result.json"])
    row = results[old["label"]]
    for placement, acc in old["accuracy"].items():
        assert row[exp.setting_name("static", placement)]["seeds"] == [acc]
    assert {p.name: p.read_bytes() for p in seed0.iterdir()} == before


@pytest.mark.parametrize("kind", ["translution", "alpha"])
def test_position_signal_is_zero_exactly_where_no_absolute_position_exists(kind):
    """A circular layout has no border, so blank patches stay alike (0); the same layer on a
    bounded grid, and a ViT with an absolute embedding, tell positions apart (> 0)."""
    torch.manual_seed(0)
    s = dataclasses.replace(exp.QUICK, **TINY)
    def signal(**arm):
        s.models["x"] = {"label": "x", **arm}
        return exp.position_signal(exp.build_model(s, "x"), s.canvas)
    circular = signal(kind=kind, circular=True)
    assert len(circular) == s.depth and max(circular) < 1e-5
    assert min(signal(kind=kind)) > 1e-3
    assert min(signal(kind="ape")) > 1e-2


def test_sweep_table_aligns_arms_with_different_canvases():
    stat = {"accuracy": 0.5, "accuracy_std": 0.0, "seeds": [0.5]}
    small = {f"{dr},{dc}": stat for dr, dc in exp.sweep_shifts(42, 7)}
    large = {f"{dr},{dc}": stat for dr, dc in exp.sweep_shifts(56, 7)}
    assert set(large) > set(small)
    header, _, row_small, row_large = exp._sweep_table("train static", {"a": small, "b": large},
                                                       exp.QUICK)[2:6]
    assert header.count("|") == row_small.count("|") == row_large.count("|")
    assert "| – |" in row_small and "| – |" not in row_large
