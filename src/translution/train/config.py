"""Typed configuration: dataclass sections, a strict YAML loader and ``key=value`` overrides.

A run is one :class:`RunConfig` with five sections: ``model`` (``{name: <registered model>,
**fields of its config}``), ``data`` (:class:`DataConfig`), ``train`` (:class:`TrainConfig`),
``optim`` (:class:`OptimConfig`) and ``schedule`` (:class:`ScheduleConfig`). A :class:`Section`
converts each value to its annotation (``int``, ``float``, ``bool``, ``str``, ``Literal``,
``Optional``, ``tuple``, ``list``, ``dict``, nested dataclasses) and checks the bounds declared
with :func:`bounded`; an unknown key is an error naming the close matches ("unknown key
data.trian_size; did you mean data.train_size?").

Experiments read their presets (``configs/<name>.yaml``) through the same system::

    @dataclass
    class MySettings(Section):
        epochs: int = bounded(2, ge=1)

    quick = load_settings(MySettings, "my_quick", ["epochs=3"])
    tuned = replace_settings(quick, ["epochs=4"])   # the CLI's --set; any dataclass works
"""

from __future__ import annotations

import dataclasses
import difflib
import operator
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Sequence, TypeVar, Union

__all__ = ["Section", "bounded", "load_settings", "replace_settings", "settings_from_dict",
           "with_overrides", "unknown_key",
           "read_yaml", "CONFIG_DIR", "DataConfig", "OptimConfig", "ScheduleConfig",
           "TrainConfig", "RunConfig", "load_config", "save_config", "config_to_dict"]

#: Where named presets live (``configs/`` at the repository root).
CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
T = TypeVar("T")
_NONE = type(None)


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None) -> Any:
    """A dataclass field whose value (each element of a tuple/list) must satisfy the bounds;
    ``None`` is not checked."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return field(default=default, metadata={"bounds": bounds})


_BOUND_OPS = {"ge": (operator.ge, ">="), "gt": (operator.gt, ">"), "le": (operator.le, "<="),
              "lt": (operator.lt, "<")}


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _fail(where: str, tp: Any, value: Any) -> TypeError:
    name = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
    return TypeError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")


def _scalar(value: Any, tp: type, where: str) -> Any:
    if tp is bool or tp is str:
        if isinstance(value, tp):
            return value
        raise _fail(where, tp, value)
    if isinstance(value, str):                 # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value)
        except ValueError:
            raise _fail(where, tp, value) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            tp is int and isinstance(value, float) and not value.is_integer()):
        raise _fail(where, tp, value)
    return tp(value)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` converted to annotation ``tp``; TypeError/ValueError naming ``where``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        for arg in (a for a in args if a is not _NONE):
            try:
                return _coerce(value, arg, where)
            except (TypeError, ValueError):
                pass
        raise _fail(where, tp, value)
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected one of {list(args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return settings_from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)) or (origin is tuple and len(value) != len(args)):
            raise _fail(where, tp, value)
        kinds = args if origin is tuple else args * len(value)
        out = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, kinds))]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, value_tp = args or (Any, Any)
        return {_coerce(k, key_tp, where): _coerce(v, value_tp, _join(where, k))
                for k, v in value.items()}
    if tp in (bool, int, float, str):
        return _scalar(value, tp, where)
    raise TypeError(f"{where}: unsupported annotation {tp!r}")


def _checked(f: dataclasses.Field, tp: Any, value: Any, where: str) -> Any:
    """``value`` of field ``f`` converted to ``tp`` and checked against its bounds."""
    value = _coerce(value, tp, where)
    items = enumerate(value) if isinstance(value, (tuple, list)) else [(None, value)]
    for i, v in items:
        for op, bound in f.metadata.get("bounds", {}).items():
            check, sign = _BOUND_OPS[op]
            if v is not None and not check(v, bound):
                raise ValueError(f"{where if i is None else f'{where}[{i}]'} must be {sign} "
                                 f"{bound}, got {v}")
    return value


def unknown_key(where: str, key: Any, valid: Sequence[str]) -> ValueError:
    """The error for an unknown ``key`` of section ``where``, naming the close matches."""
    close = difflib.get_close_matches(str(key), list(valid), n=1)
    hint = (f"did you mean {_join(where, close[0])}?" if close
            else f"valid keys: {', '.join(valid)}")
    return ValueError(f"unknown key {_join(where, key)}; {hint}")


class Section:
    """Base of typed config dataclasses: fields are converted to their annotations and checked
    against their :func:`bounded` bounds at construction; :meth:`check` adds cross-field rules.
    ``where`` prefixes the keys in error messages (``"optim"``)."""

    where: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = _checked(f, hints[f.name], getattr(self, f.name), _join(self.where, f.name))
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules between fields (override in a section)."""

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any] | None) -> T:
        """Build from a mapping; unknown keys are errors."""
        return settings_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested values (tuples become lists) for YAML/JSON."""
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def settings_from_dict(cls: type[T], values: Mapping[str, Any] | None, where: str = "") -> T:
    """``cls(**values)`` for a dataclass ``cls``, every value checked, unknown keys refused.

    Raises:
        ValueError: An unknown key (with close matches), or a value out of bounds.
        TypeError: ``values`` is not a mapping, or a value has the wrong type.
    """
    if isinstance(values, cls):
        return values
    where, values = where or getattr(cls, "where", ""), {} if values is None else values
    if not isinstance(values, Mapping):
        raise TypeError(f"{where or cls.__name__}: expected a mapping, got "
                        f"{type(values).__name__} {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints, kwargs = typing.get_type_hints(cls), {}
    for key, value in values.items():
        if key not in fields:
            raise unknown_key(where, key, list(fields))
        kwargs[key] = _checked(fields[key], hints[key], value, _join(where, key))
    return cls(**kwargs)


def replace_settings(settings: T, overrides: Sequence[str]) -> T:
    """``settings`` with ``key=value`` items applied, checked like :func:`load_settings`."""
    return settings_from_dict(type(settings),
                              with_overrides(dataclasses.asdict(settings), overrides))


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file is ``{}``).

    Raises:
        ValueError: The file is missing, not valid YAML or not a mapping.
    """
    import yaml
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {str(p)!r} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {str(p)!r} is not valid YAML: {e}") from e
    if loaded is not None and not isinstance(loaded, dict):
        raise ValueError(f"config file {str(p)!r} must hold a mapping at the top level, "
                         f"got {type(loaded).__name__}")
    return loaded or {}


def with_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the nested mapping ``values`` with ``key=value`` items applied in order.

    Keys are dotted paths (``optim.lr``); values are parsed as YAML (``[0.9, 0.95]``,
    ``{a: 1}``, ``true``, ``null``; unparsable: a string). Keys and types are checked when the
    result becomes a section.

    Raises:
        ValueError: An item that is not ``key=value`` with a dotted key.
    """
    import yaml
    out = _plain(dict(values))
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"override must look like 'key=value' (e.g. optim.lr=1e-3), "
                             f"got {item!r}")
        key, raw = item.split("=", 1)
        path = key.strip().split(".")
        if not all(path):
            raise ValueError(f"override key must be a dotted path like 'optim.lr', got {key!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return out


def load_settings(cls: type[T], preset: str | os.PathLike | None = None,
                  overrides: Sequence[str] = ()) -> T:
    """A settings dataclass from a preset (a YAML path, a name in ``configs/``, or ``None`` for
    the defaults) plus ``key=value`` overrides, all checked.

    Raises:
        ValueError: Unknown preset or key (with close matches), malformed item, bad value.
        TypeError: A value of the wrong type.
    """
    values: dict[str, Any] = {}
    if preset is not None:
        path = Path(preset)
        if path.suffix not in (".yaml", ".yml") and not path.exists():
            path = CONFIG_DIR / f"{preset}.yaml"
        values = read_yaml(path)
    return settings_from_dict(cls, with_overrides(values, overrides))


PLACEMENT = Literal["static", "patch", "pixel"]


@dataclass
class DataConfig(Section):
    """Data settings (keys the chosen data set does not use are ignored).

    Attributes:
        dataset: ``mnist``, ``fashion-mnist``, ``dynamic-mnist`` (digits on a larger canvas),
            ``imagefolder`` (``root/train``, ``root/val``), ``text`` (a token folder ``dir``) or
            ``austen`` (the novels, tokenized into a cache folder, or ``dir``).
        root: Image folder (imagefolder) or local MNIST IDX folder (else cache / download).
        train_size, test_size: Use only the first N images (``None``: all).
        canvas, patch: Canvas side (default 28, dynamic-mnist 42) and patch side.
        placement, test_placement: ``static``, ``patch`` or ``pixel`` (test: as train).
        test_seed: Seed of the test placements.
        img_size, resize, randaugment, mixup, cutmix: ImageNet augmentation (SPEC §6).
        tokenizer, val_novel: Austen tokenizer (``char``/``gpt2``) and held-out novel.
        block_size: Window length (default: the model's context).
        steps_per_epoch, eval_iters: Random-window batches per epoch / per evaluation.
    """

    where: ClassVar[str] = "data"
    dataset: Literal["mnist", "fashion-mnist", "dynamic-mnist", "imagefolder", "text",
                     "austen"] | None = None
    root: str | None = None
    dir: str | None = None
    train_size: int | None = bounded(None, ge=1)
    test_size: int | None = bounded(None, ge=1)
    canvas: int | None = bounded(None, ge=1)
    patch: int = bounded(7, ge=1)
    placement: PLACEMENT = "static"
    test_placement: PLACEMENT | None = None
    test_seed: int = bounded(1234, ge=0)
    img_size: int = bounded(224, ge=1)
    resize: int = bounded(256, ge=1)
    randaugment: tuple[int, int] = bounded((2, 9), ge=0)
    mixup: float = bounded(0.8, ge=0)
    cutmix: float = bounded(1.0, ge=0)
    tokenizer: Literal["char", "gpt2"] = "char"
    val_novel: str = "persuasion"
    block_size: int | None = bounded(None, ge=1)
    steps_per_epoch: int = bounded(500, ge=1)
    eval_iters: int = bounded(20, ge=1)

    def check(self) -> None:
        need = {"text": "dir", "imagefolder": "root"}.get(self.dataset or "")
        if need and getattr(self, need) is None:
            raise ValueError(f"data.{need} is required when data.dataset is "
                             f"{self.dataset!r}")


@dataclass
class OptimConfig(Section):
    """Optimiser settings.

    Attributes:
        name: ``"adamw"``, ``"adadelta"`` or ``"sgd"``.
        lr: Base learning rate (the schedule scales it).
        weight_decay: Decoupled (AdamW) or L2 (Adadelta, SGD) weight decay.
        betas: AdamW. eps: ``None``: the optimiser's default. rho: Adadelta.
        momentum, nesterov: SGD.
        grad_clip: Clip the global gradient norm to this value (``None``/0: off).
        decay_1d: Decay 1-D parameters (biases, norms) too.
    """

    where: ClassVar[str] = "optim"
    name: Literal["adamw", "adadelta", "sgd"] = "adamw"
    lr: float = bounded(3e-4, gt=0)
    weight_decay: float = bounded(0.0, ge=0)
    betas: tuple[float, float] = bounded((0.9, 0.999), ge=0, lt=1)
    eps: float | None = bounded(None, gt=0)
    rho: float = bounded(0.9, ge=0, le=1)
    momentum: float = bounded(0.9, ge=0)
    nesterov: bool = False
    grad_clip: float | None = bounded(None, ge=0)
    decay_1d: bool = True


@dataclass
class ScheduleConfig(Section):
    """Learning rate over time ``t`` (steps, or epochs with ``per="epoch"``).

    Attributes:
        name: ``"constant"``, ``"cosine"`` (to ``min_lr`` over ``total``, default the whole
            run) or ``"step"`` (``gamma ** (t // step_size)``).
        warmup: Linear warm-up length in units of ``per`` (0: none).
    """

    where: ClassVar[str] = "schedule"
    name: Literal["constant", "cosine", "step"] = "constant"
    per: Literal["step", "epoch"] = "step"
    warmup: int = bounded(0, ge=0)
    step_size: int = bounded(1, ge=1)
    gamma: float = bounded(0.1, gt=0)
    min_lr: float = bounded(0.0, ge=0)
    total: int | None = bounded(None, ge=1)


@dataclass
class TrainConfig(Section):
    """Loop settings.

    Attributes:
        epochs, max_steps: Run length (``max_steps``, when set, wins).
        time_budget_s: Stop (and checkpoint) after this much training time, summed over
            resumes (``None``: no limit).
        batch_size, eval_batch_size, num_workers: Per process.
        eval_every, eval_every_epochs, eval_at_start: Evaluate every N steps / epochs (0:
            never), at the end, and at step 0.
        log_every: Training record every N steps.
        checkpoint_every, checkpoint_every_epochs: ``last.pt`` every N steps / epochs (0:
            never) and at the end.
        precision: ``"fp32"`` or ``"bf16"`` autocast.
        out_dir: Output folder (``None``: nothing is written).
        best_metric, best_mode: What decides ``best.pt`` (``None``/``"auto"``: the task's).
        device: ``None``: CUDA when available.
    """

    where: ClassVar[str] = "train"
    epochs: int = bounded(1, ge=1)
    max_steps: int | None = bounded(None, ge=1)
    time_budget_s: float | None = bounded(None, gt=0)
    batch_size: int = bounded(64, ge=1)
    eval_batch_size: int | None = bounded(None, ge=1)
    num_workers: int = bounded(0, ge=0)
    eval_every: int = bounded(0, ge=0)
    eval_every_epochs: int = bounded(0, ge=0)
    eval_at_start: bool = False
    log_every: int = bounded(50, ge=1)
    checkpoint_every: int = bounded(0, ge=0)
    checkpoint_every_epochs: int = bounded(1, ge=0)
    seed: int = bounded(0, ge=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    out_dir: str | None = None
    best_metric: str | None = None
    best_mode: Literal["auto", "min", "max"] = "auto"
    save_best: bool = True
    csv: bool = False
    progress: bool = True
    compile: bool = False
    deterministic: bool = False
    device: str | None = None


def check_model_section(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"name": <registered model>, **fields}`` checked against the model's config class.

    Raises:
        ValueError: Unknown model or field (with close matches) or a value the config refuses.
        TypeError: A value of the wrong type.
    """
    if not values:
        return {}
    from ..models import get_model_config
    from ..models.registry import is_model
    name = values.get("name")
    if not isinstance(name, str):
        raise ValueError(f"model.name must name a registered model (see `translution models`), "
                         f"got {name!r}")
    try:
        base = get_model_config(name)
    except ValueError as e:
        if is_model(name):                     # registered without a config: cannot check
            return dict(values)
        raise ValueError(f"model.name: {e}") from None
    hints, valid = typing.get_type_hints(type(base)), [f.name for f in dataclasses.fields(base)]
    out = {"name": name}
    for key, value in values.items():
        if key != "name":
            if key not in valid:
                raise unknown_key("model", key, ["name"] + valid)
            out[key] = _coerce(value, hints[key], f"model.{key}")
    try:
        get_model_config(name, **{k: v for k, v in out.items() if k != "name"})
    except (TypeError, ValueError) as e:
        raise type(e)(f"model ({name}): {e}") from None
    return out


@dataclass
class RunConfig(Section):
    """Everything a run needs; sections may be given as mappings."""

    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def check(self) -> None:
        self.model = check_model_section(self.model)


def config_to_dict(cfg: Section) -> dict[str, Any]:
    """``cfg.to_dict()``: nested plain Python values."""
    return cfg.to_dict()


def load_config(path: str | os.PathLike | None = None,
                overrides: Sequence[str] = ()) -> RunConfig:
    """A YAML run configuration (or the defaults) with ``key=value`` overrides applied.

    Raises:
        ValueError: Missing/invalid file, unknown key (with close matches), bad value.
        TypeError: A value of the wrong type.
    """
    return RunConfig.from_dict(with_overrides(read_yaml(path) if path else {}, overrides))


def save_config(cfg: Section, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as YAML (atomically); returns the path."""
    import yaml
    from ..utils import atomic_write_text
    return atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
