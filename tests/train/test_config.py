"""Config dataclasses, YAML loading, dotted overrides, saving."""

from __future__ import annotations

import pytest
import yaml

from translution.train import (OptimConfig, RunConfig, ScheduleConfig, TrainConfig,
                               apply_overrides, load_config, save_config)


def test_defaults_without_file():
    cfg = load_config(None, [])
    assert cfg == RunConfig()
    assert cfg.optim.name == "adamw" and cfg.schedule.name == "constant"
    assert cfg.model == {} and cfg.data == {}


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name": "vit_mnist", "depth": 6},
        "data": {"name": "mnist"},
        "train": {"epochs": 14, "batch_size": 64},
        "optim": {"name": "adadelta", "lr": 1.0},
        "schedule": {"name": "step", "per": "epoch", "step_size": 1, "gamma": 0.7},
    }))
    cfg = load_config(path, ["optim.lr=1e-3", "model.depth=2", "optim.betas=[0.9, 0.95]",
                             "train.max_steps=1e3", "data.aug.mixup=0.8", "train.out_dir=null",
                             "optim.grad_clip=1"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # YAML reads 1e-3 as str
    assert cfg.optim.name == "adadelta"
    assert cfg.model == {"name": "vit_mnist", "depth": 2}
    assert cfg.data == {"name": "mnist", "aug": {"mixup": 0.8}}
    assert cfg.optim.betas == (0.9, 0.95)
    assert cfg.train.max_steps == 1000 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.epochs == 14 and cfg.train.out_dir is None
    assert cfg.optim.grad_clip == 1.0 and isinstance(cfg.optim.grad_clip, float)
    assert cfg.schedule == ScheduleConfig(name="step", per="epoch", step_size=1, gamma=0.7)


def test_round_trip(tmp_path):
    cfg = load_config(None, ["model.name=gpt", "model.layers=[1, 2]", "optim.betas=[0.9,0.95]",
                             "schedule.name=cosine", "schedule.warmup=5", "train.precision=bf16",
                             "train.best_metric=loss", "train.out_dir=runs/x"])
    path = save_config(cfg, tmp_path / "sub" / "config.yaml")
    assert path.exists()
    again = load_config(path, [])
    assert again == cfg
    assert yaml.safe_load(path.read_text())["optim"]["betas"] == [0.9, 0.95]


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=1", ["lrr", "valid keys", "weight_decay"]),
    ("train.foo.bar=1", ["foo.bar", "valid keys", "max_steps"]),
    ("model_x.depth=1", ["model_x", "valid sections", "schedule"]),
    ("optim.lr", ["section.key=value"]),
    ("=3", ["dotted path"]),
])
def test_bad_override_keys(override, words):
    with pytest.raises(ValueError) as e:
        load_config(None, [override])
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("override, expected", [
    ("optim.lr=abc", "expected float"),
    ("train.eval_every=1.5", "expected int"),
    ("train.csv=1", "expected bool"),
    ("train.out_dir=123", "expected str | None"),
    ("optim.betas=0.9", "sequence of 2"),
    ("model=3", "mapping"),
])
def test_type_errors(override, expected):
    with pytest.raises(TypeError, match=expected):
        load_config(None, [override])


@pytest.mark.parametrize("override, expected", [
    ("optim.name=adam", r"one of \['adamw', 'adadelta', 'sgd'\], got 'adam'"),
    ("schedule.per=batch", "one of"),
    ("optim.lr=-1", r"optim.lr must be > 0, got -1.0"),
    ("train.log_every=0", "train.log_every must be > 0"),
    ("optim.betas=[0.9, 1.0]", r"betas\[1\]"),
])
def test_value_errors(override, expected):
    with pytest.raises(ValueError, match=expected):
        load_config(None, [override])


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping at the top level"):
        load_config(lst)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("optim: {lr: 0.1, momentumm: 0.9}\n")
    with pytest.raises(ValueError, match=r"momentumm.*valid keys"):
        load_config(unknown)
    section = tmp_path / "section.yaml"
    section.write_text("trian: {epochs: 3}\n")
    with pytest.raises(ValueError, match=r"trian.*valid sections"):
        load_config(section)


def test_direct_construction_is_checked():
    with pytest.raises(ValueError, match="one of"):
        OptimConfig(name="rmsprop")
    with pytest.raises(TypeError, match="expected int"):
        TrainConfig(epochs="three")
    assert TrainConfig(epochs=2.0).epochs == 2
    cfg = RunConfig(train={"epochs": 3}, optim={"lr": 1})
    assert cfg.train.epochs == 3 and cfg.optim.lr == 1.0
    with pytest.raises(TypeError, match="TrainConfig or a mapping"):
        RunConfig(train=3)


def test_apply_overrides_leaves_input_untouched():
    base = {"model": {"depth": 1}}
    out = apply_overrides(base, ["model.depth=2", "model.extra.x=true"])
    assert base == {"model": {"depth": 1}}
    assert out == {"model": {"depth": 2, "extra": {"x": True}}}
