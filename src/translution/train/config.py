"""Typed configuration: dataclass sections (values converted to their annotations and checked
against their :func:`bounded` bounds, unknown keys refused naming close matches), YAML presets
(:func:`load_settings`) and ``key=value`` overrides; :class:`RunConfig` for runs."""

from __future__ import annotations

import contextlib
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
           "with_overrides", "unknown_key", "CONFIG_DIR", "DataConfig", "OptimConfig",
           "ScheduleConfig", "TrainConfig", "RunConfig", "load_config", "save_config"]

#: Where named presets live (``configs/`` at the repository root).
CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
T = TypeVar("T")
_BOUND_OPS = {"ge": (operator.ge, ">="), "gt": (operator.gt, ">"), "le": (operator.le, "<="),
              "lt": (operator.lt, "<")}


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None) -> Any:
    """A dataclass field whose value (or each element) must satisfy the bounds (``None``: not)."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return field(default=default, metadata={"bounds": bounds})


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _fail(where: str, tp: Any, value: Any) -> TypeError:
    name = tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
    hint = (" (no value: an empty 'key=' or 'key:', or null; in YAML {a, b: 1} an unquoted comma "
            "makes 'a' a key without value: quote it, {\"a, b\": 1})") * (value is None)
    return TypeError(f"{where}: expected {name}, got {type(value).__name__} {value!r}{hint}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` converted to annotation ``tp``; TypeError/ValueError naming ``where``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and types.NoneType in args:
            return None
        for arg in (a for a in args if a is not types.NoneType):
            with contextlib.suppress(TypeError, ValueError):
                return _coerce(value, arg, where)
        raise _fail(where, tp, value)
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise ValueError(*_fail(where, f"one of {list(args)}", value).args)
    if dataclasses.is_dataclass(tp):
        if value is None:  # no section given: refused, not silently the section's defaults
            raise _fail(where, tp, value)
        return settings_from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)) or (origin is tuple and len(value) != len(args)):
            raise _fail(where, tp, value)
        kinds = args if origin is tuple else args * len(value)
        out = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, kinds))]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _fail(where, "a mapping", value)
        key_tp, value_tp = args
        return {_coerce(k, key_tp, where): _coerce(v, value_tp, _join(where, k))
                for k, v in value.items()}
    if tp in (bool, str):
        if isinstance(value, tp):
            return value
    elif tp in (int, float):
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # YAML 1.1 reads "1e-3" as a string
                value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                tp is float or isinstance(value, int) or value.is_integer()):
            return tp(value)
    else:
        raise TypeError(f"{where}: unsupported annotation {tp!r}")
    raise _fail(where, tp, value)


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


def _converted(cls: type, values: Mapping[str, Any], where: str,
               other_keys: Sequence[str] = (), convert: bool = True) -> dict[str, Any]:
    """The items of ``values`` converted (unless ``convert=False``) to the fields of dataclass
    ``cls`` (``other_keys`` are left for the caller); an unknown key is an error."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints, out = typing.get_type_hints(cls) if convert else {}, {}
    for key, value in values.items():
        if key not in other_keys:
            if key not in fields:
                raise unknown_key(where, key, [*other_keys, *fields])
            out[key] = _checked(fields[key], hints[key], value, _join(where, key)) \
                if convert else value
    return out


class Section:
    """Base of typed config dataclasses: fields are converted and bounds-checked at
    construction; :meth:`check` adds cross-field rules; ``where`` prefixes error keys."""

    where: ClassVar[str] = ""

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore
        for name, value in _converted(type(self), values, self.where).items():
            object.__setattr__(self, name, value)
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
    """``cls(**values)`` for a dataclass ``cls``, every value checked, unknown keys refused."""
    if isinstance(values, cls):
        return values
    where, values = where or getattr(cls, "where", ""), {} if values is None else values
    if not isinstance(values, Mapping):
        raise _fail(where or cls.__name__, "a mapping", values)
    # a Section converts its fields itself (Section.__post_init__)
    return cls(**_converted(cls, values, where, convert=not issubclass(cls, Section)))


def replace_settings(settings: T, overrides: Sequence[str]) -> T:
    """``settings`` with ``key=value`` items applied, checked like :func:`load_settings`."""
    return settings_from_dict(type(settings),
                              with_overrides(dataclasses.asdict(settings), overrides))


def with_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the nested mapping ``values`` with ``key=value`` items applied in order: dotted
    keys (``optim.lr``), values parsed as YAML (unparsable: a string), checked later."""
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
        value = raw
        with contextlib.suppress(yaml.YAMLError):
            value = yaml.safe_load(raw)
        node = out
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return out


def load_settings(cls: type[T], preset: str | os.PathLike | None = None,
                  overrides: Sequence[str] = ()) -> T:
    """A settings dataclass from a preset (a YAML file holding a mapping, a name in ``configs/``,
    or ``None`` for the defaults) plus ``key=value`` overrides, all checked."""
    import yaml
    values = None
    if preset is not None:
        path = Path(preset)
        if path.suffix not in (".yaml", ".yml") and not path.exists():
            path = CONFIG_DIR / f"{preset}.yaml"
        if not path.is_file():
            what = "is not a regular file" if path.exists() else "does not exist"
            raise ValueError(f"config file {str(path)!r} {what}")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"config file {str(path)!r} is not valid YAML: {e}") from e
        if values is not None and not isinstance(values, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping at the top level, "
                             f"got {type(values).__name__}")
    return settings_from_dict(cls, with_overrides(values or {}, overrides))


PLACEMENT = Literal["static", "patch", "pixel"]


@dataclass
class DataConfig(Section):
    """Data settings (keys the chosen data set does not use are ignored)."""

    where: ClassVar[str] = "data"
    # dynamic-mnist: digits on a larger canvas; imagefolder: root/train, root/val; text: a
    # token folder ``dir``; austen: the novels tokenized into a cache folder (or ``dir``)
    dataset: Literal["mnist", "fashion-mnist", "dynamic-mnist", "imagefolder", "text",
                     "austen"] | None = None
    root: str | None = None                    # image folder / MNIST IDX folder
    dir: str | None = None
    train_size: int | None = bounded(None, ge=1)   # the first N images (None: all)
    test_size: int | None = bounded(None, ge=1)
    canvas: int | None = bounded(None, ge=1)   # default 28, dynamic-mnist 42
    patch: int = bounded(7, ge=1)
    placement: PLACEMENT = "static"
    test_placement: PLACEMENT | None = None    # None: as placement
    test_seed: int = bounded(1234, ge=0)
    img_size: int = bounded(224, ge=1)         # img_size .. cutmix: ImageNet augmentation
    resize: int = bounded(256, ge=1)
    randaugment: tuple[int, int] = bounded((2, 9), ge=0)
    mixup: float = bounded(0.8, ge=0)
    cutmix: float = bounded(1.0, ge=0)
    tokenizer: Literal["char", "gpt2"] = "char"    # Austen tokenizer and held-out novel
    val_novel: str = "persuasion"
    block_size: int | None = bounded(None, ge=1)   # window length (None: the model's context)
    steps_per_epoch: int = bounded(500, ge=1)  # random-window batches per epoch / evaluation
    eval_iters: int = bounded(20, ge=1)

    def check(self) -> None:
        need = {"text": "dir", "imagefolder": "root"}.get(self.dataset or "")
        if need and getattr(self, need) is None:
            raise ValueError(f"data.{need} is required when data.dataset is {self.dataset!r}")


@dataclass
class OptimConfig(Section):
    """Optimiser settings (``eps=None``: the optimiser's default)."""

    where: ClassVar[str] = "optim"
    name: Literal["adamw", "adadelta", "sgd"] = "adamw"
    lr: float = bounded(3e-4, gt=0)
    weight_decay: float = bounded(0.0, ge=0)   # decoupled (AdamW) or L2
    betas: tuple[float, float] = bounded((0.9, 0.999), ge=0, lt=1)
    eps: float | None = bounded(None, gt=0)
    rho: float = bounded(0.9, ge=0, le=1)      # Adadelta
    momentum: float = bounded(0.9, ge=0)       # SGD
    nesterov: bool = False
    grad_clip: float | None = bounded(None, ge=0)  # global gradient norm (None/0: off)
    decay_1d: bool = True                      # decay biases and norms too


@dataclass
class ScheduleConfig(Section):
    """Learning rate over time (steps, or epochs with ``per="epoch"``): ``constant``, ``cosine``
    (to ``min_lr`` over ``total``, default the run) or ``step`` (``gamma ** (t // step_size)``),
    after a linear ``warmup``."""

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
    """Loop settings; sizes are per process, ``*_every`` 0 means never."""

    where: ClassVar[str] = "train"
    epochs: int = bounded(1, ge=1)
    max_steps: int | None = bounded(None, ge=1)    # wins over epochs
    time_budget_s: float | None = bounded(None, gt=0)  # training time, summed over resumes
    batch_size: int = bounded(64, ge=1)
    eval_batch_size: int | None = bounded(None, ge=1)
    num_workers: int = bounded(0, ge=0)
    eval_every: int = bounded(0, ge=0)         # steps (and always at the end)
    eval_every_epochs: int = bounded(0, ge=0)
    eval_at_start: bool = False
    log_every: int = bounded(50, ge=1)
    checkpoint_every: int = bounded(0, ge=0)   # last.pt every N steps (and at the end)
    checkpoint_every_epochs: int = bounded(1, ge=0)
    seed: int = bounded(0, ge=0)
    precision: Literal["fp32", "bf16"] = "fp32"    # bf16: autocast
    out_dir: str | None = None                 # None: nothing is written
    best_metric: str | None = None             # what decides best.pt (None/auto: the task's)
    best_mode: Literal["auto", "min", "max"] = "auto"
    save_best: bool = True
    csv: bool = False
    progress: bool = True
    compile: bool = False
    deterministic: bool = False
    device: str | None = None                  # None: CUDA when available


def check_model_section(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"name": <registered model>, **fields}`` checked against the model's config class."""
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
    fields = _converted(type(base), values, "model", ["name"])
    try:
        get_model_config(name, **fields)
    except (TypeError, ValueError) as e:
        raise type(e)(f"model ({name}): {e}") from None
    return {"name": name, **fields}


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


def load_config(path: str | os.PathLike | None = None,
                overrides: Sequence[str] = ()) -> RunConfig:
    """:func:`load_settings` of a :class:`RunConfig` (a YAML path, a preset name or ``None``)."""
    return load_settings(RunConfig, path or None, overrides)


def save_config(cfg: Section, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as YAML (atomically); returns the path."""
    import yaml
    from ..utils import atomic_write_text
    return atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
