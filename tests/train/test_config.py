"""Config dataclasses, YAML loading, dotted overrides, saving."""

from __future__ import annotations

import dataclasses
from typing import Dict

import pytest
import yaml

from translution.train import (OptimConfig, RunConfig, ScheduleConfig, TrainConfig,
                               load_config, save_config)
from translution.train.config import (CONFIG_DIR, DataConfig, Section, bounded, load_settings,
                                      replace_settings, with_overrides)


def test_defaults_without_file():
    cfg = load_config(None, [])
    assert cfg == RunConfig()
    assert cfg.optim.name == "adamw" and cfg.schedule.name == "constant"
    assert cfg.model == {} and cfg.data == DataConfig()


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"name": "vit_mnist_translution", "depth": 6},
        "data": {"dataset": "mnist"},
        "train": {"epochs": 14, "batch_size": 64},
        "optim": {"name": "adadelta", "lr": 1.0},
        "schedule": {"name": "step", "per": "epoch", "step_size": 1, "gamma": 0.7},
    }))
    cfg = load_config(path, ["optim.lr=1e-3", "model.depth=2", "optim.betas=[0.9, 0.95]",
                             "train.max_steps=1e3", "data.mixup=0.5", "train.out_dir=null",
                             "optim.grad_clip=1"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # YAML reads 1e-3 as str
    assert cfg.optim.name == "adadelta"
    assert cfg.model == {"name": "vit_mnist_translution", "depth": 2}
    assert cfg.data == DataConfig(dataset="mnist", mixup=0.5)
    assert cfg.optim.betas == (0.9, 0.95)
    assert cfg.train.max_steps == 1000 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.epochs == 14 and cfg.train.out_dir is None
    assert cfg.optim.grad_clip == 1.0 and isinstance(cfg.optim.grad_clip, float)
    assert cfg.schedule == ScheduleConfig(name="step", per="epoch", step_size=1, gamma=0.7)


def test_round_trip(tmp_path):
    cfg = load_config(None, ["model.name=vit_micro_ape", "model.image_size=[8, 16]",
                             "model.patch_size=4", "optim.betas=[0.9,0.95]",
                             "schedule.name=cosine", "schedule.warmup=5", "train.precision=bf16",
                             "train.best_metric=loss", "train.out_dir=runs/x"])
    path = save_config(cfg, tmp_path / "sub" / "config.yaml")
    assert path.exists()
    again = load_config(path, [])
    assert again == cfg
    assert yaml.safe_load(path.read_text())["optim"]["betas"] == [0.9, 0.95]


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=1", ["unknown key optim.lrr; did you mean optim.lr?"]),
    ("train.foo.bar=1", ["unknown key train.foo;", "valid keys", "max_steps"]),
    ("model_x.depth=1", ["unknown key model_x; did you mean model?"]),
    ("data.trian_size=64", ["unknown key data.trian_size; did you mean data.train_size?"]),
    ("data.test_placment=pixel", ["unknown key data.test_placment; did you mean "
                                  "data.test_placement?"]),
    ("model.depht=2", ["unknown key model.depht; did you mean model.depth?"]),
    ("model.name=vit_mnist_translutoin", ["unknown model", "vit_mnist_translution"]),
    ("optim.lr", ["key=value"]),
    ("=3", ["dotted path"]),
])
def test_bad_override_keys(override, words):
    with pytest.raises(ValueError) as e:
        load_config(None, ["model.name=vit_mnist_translution", override])
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("override, expected", [
    ("optim.lr=abc", "expected float"),
    ("train.eval_every=1.5", "expected int"),
    ("train.csv=1", "expected bool"),
    ("train.out_dir=123", "expected str | None"),
    ("optim.betas=0.9", r"optim.betas: expected tuple\[float, float\], got float 0.9"),
    ("model=3", "mapping"),
    ("data.train_size=abc", r"data.train_size: expected int \| None, got str 'abc'"),
    ("model.depth=two", "model.depth: expected int, got str 'two'"),
    ("data.randaugment=[2, x]", r"data.randaugment\[1\]: expected int"),
])
def test_type_errors(override, expected):
    with pytest.raises(TypeError, match=expected):
        load_config(None, ["model.name=vit_micro_ape", override])


@pytest.mark.parametrize("override, expected", [
    ("optim.name=adam", r"one of \['adamw', 'adadelta', 'sgd'\], got str 'adam'"),
    ("schedule.per=batch", "one of"),
    ("optim.lr=-1", r"optim.lr must be > 0, got -1.0"),
    ("train.log_every=0", "train.log_every must be >= 1"),
    ("data.train_size=-5", "data.train_size must be >= 1, got -5"),
    ("data.dataset=text", "data.dir is required when data.dataset is 'text'"),
    ("model.heads=0", r"model \(vit_micro_ape\): heads must be >= 1"),
    ("optim.betas=[0.9, 1.0]", r"betas\[1\]"),
])
def test_value_errors(override, expected):
    with pytest.raises(ValueError, match=expected):
        load_config(None, ["model.name=vit_micro_ape", override])


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(ValueError, match="is not a regular file"):
        load_config(tmp_path / "folder.yaml")
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
    with pytest.raises(ValueError, match=r"optim.momentumm; did you mean optim.momentum\?"):
        load_config(unknown)
    section = tmp_path / "section.yaml"
    section.write_text("trian: {epochs: 3}\n")
    with pytest.raises(ValueError, match=r"unknown key trian; did you mean train\?"):
        load_config(section)


def test_direct_construction_is_checked():
    with pytest.raises(ValueError, match="one of"):
        OptimConfig(name="rmsprop")
    with pytest.raises(TypeError, match="expected int"):
        TrainConfig(epochs="three")
    assert TrainConfig(epochs=2.0).epochs == 2
    cfg = RunConfig(train={"epochs": 3}, optim={"lr": 1})
    assert cfg.train.epochs == 3 and cfg.optim.lr == 1.0
    with pytest.raises(TypeError, match="train: expected a mapping"):
        RunConfig(train=3)


def test_with_overrides_leaves_input_untouched():
    base = {"model": {"depth": 1}}
    out = with_overrides(base, ["model.depth=2", "model.extra.x=true"])
    assert base == {"model": {"depth": 1}}
    assert out == {"model": {"depth": 2, "extra": {"x": True}}}


@dataclasses.dataclass
class _Settings(Section):
    epochs: int = bounded(2, ge=1)
    lr: float = bounded(1e-3, gt=0)
    models: dict[str, str] = dataclasses.field(default_factory=lambda: {"ViT": "ape"})
    sizes: tuple[int, int] = (1, 2)


@dataclasses.dataclass
class _Plain:                                  # any dataclass works, not only a Section
    epochs: int = 2


def test_presets_and_settings_overrides(tmp_path):
    preset = tmp_path / "quick.yaml"
    preset.write_text("epochs: 3\nmodels: {A: alpha, B: ape}\n")
    s = load_settings(_Settings, preset, ["lr=1e-2", "sizes=[3, 4]"])
    assert s == _Settings(epochs=3, lr=1e-2, models={"A": "alpha", "B": "ape"}, sizes=(3, 4))
    assert replace_settings(s, ["epochs=5"]) == dataclasses.replace(s, epochs=5)
    assert load_settings(_Settings, None, []) == _Settings()
    assert replace_settings(_Plain(), ["epochs=4"]) == _Plain(4)
    for items, error, match in [
        (["epochs=abc"], TypeError, "epochs: expected int, got str 'abc'"),
        (["epochs=0"], ValueError, "epochs must be >= 1, got 0"),
        (["models=[ape]"], TypeError, r"models: expected a mapping, got list \['ape'\]"),
        (["modles={a: b}"], ValueError, "unknown key modles; did you mean models?"),
        (["sizes=[1]"], TypeError, r"sizes: expected tuple\[int, int\]"),
    ]:
        with pytest.raises(error, match=match):
            load_settings(_Settings, preset, items)
    with pytest.raises(TypeError, match="epochs: expected int"):
        replace_settings(_Plain(), ["epochs=x"])
    with pytest.raises(ValueError, match="does not exist"):
        load_settings(_Settings, "no_such_preset")


@dataclasses.dataclass
class _Nested:
    arms: Dict[str, Dict[str, int]] = dataclasses.field(default_factory=dict)


def test_unquoted_comma_in_a_flow_key_is_explained():
    # YAML reads {a, b: {x: 1}} as {a: None, b: {x: 1}}: the message says why the value is empty
    with pytest.raises(TypeError, match=r"arms\.a: expected a mapping, got NoneType None \(no "
                       r"value: an empty 'key=' or 'key:', or null; in YAML \{a, b: 1\} an "
                       r"unquoted comma makes 'a' a key without value: quote it, "
                       r"\{\"a, b\": 1\}\)"):
        load_settings(_Nested, None, ["arms={a, b: {x: 1}}"])
    assert load_settings(_Nested, None, ['arms={"a, b": {x: 1}}']).arms == {"a, b": {"x": 1}}
    with pytest.raises(TypeError, match=r"epochs: expected int, got NoneType None \(no value: "
                       r"an empty 'key='"):
        load_settings(_Plain, None, ["epochs="])


@pytest.mark.parametrize("override, error, expected", [
    # an empty section was silently the section's defaults; now it is refused like a field
    ("train=", TypeError, "train: expected TrainConfig"),
    ("optim=", TypeError, "optim: expected OptimConfig"),
    ("data.placement=", ValueError, r"data.placement: expected one of \['static', "),
])
def test_empty_section_or_choice_is_refused_with_the_no_value_hint(override, error, expected):
    with pytest.raises(error, match=expected + r".*got NoneType None \(no value: "):
        load_config(None, [override])
    assert load_config(None, ["train={}"]).train == TrainConfig()  # an empty mapping: defaults


def test_shipped_configs_load():
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        if not path.name.startswith(("austen_quick", "austen_full", "dynamic_mnist", "fashion_")):
            assert load_config(path).model, path
