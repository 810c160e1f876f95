"""Run configuration: dataclasses, YAML loading with ``key=value`` overrides, saving.

A run is described by one :class:`RunConfig`::

    model:    {name: vit_mnist, depth: 6}   # opaque: passed to the model builder
    data:     {name: mnist, root: data/}    # opaque: passed to the data builder
    train:    TrainConfig                   # loop length, evaluation, checkpoints, precision
    optim:    OptimConfig                   # optimiser and gradient clipping
    schedule: ScheduleConfig                # learning-rate schedule

:func:`load_config` reads a YAML file (or nothing) and applies dotted overrides such as
``optim.lr=1e-3`` or ``model.depth=2``; values are parsed like YAML and type-checked against the
dataclass fields. :func:`save_config` writes the resolved configuration back as YAML.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "RunConfig",
    "load_config",
    "save_config",
    "apply_overrides",
    "config_to_dict",
]

def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if typing.get_origin(tp) is tuple:
        return "tuple[" + ", ".join(_type_name(a) for a in typing.get_args(tp)) + "]"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to annotation ``tp`` or raise TypeError/ValueError."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except (TypeError, ValueError):
                pass
        raise TypeError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ValueError(f"{where}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TypeError(f"{where}: expected a sequence of {len(args)} values "
                            f"({_type_name(tp)}), got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{where}: expected bool (true/false), got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise TypeError(f"{where}: expected float, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        f = value
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                f = None
        if isinstance(f, float) and f.is_integer():
            return int(f)
        raise TypeError(f"{where}: expected int, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"{where}: expected str, got {type(value).__name__} {value!r}")
    raise TypeError(f"{where}: unsupported annotation {tp!r}")  # pragma: no cover


class _Section:
    """Mixin: type-check and coerce every field after construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            where = f"{_section_name(type(self))}.{f.name}"
            object.__setattr__(self, f.name, _coerce(getattr(self, f.name), hints[f.name], where))
        self._check()

    def _check(self) -> None:
        """Range checks; overridden by sections."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """Build the section from a mapping, rejecting unknown keys.

        Raises:
            ValueError: If a key is not a field; the message lists the valid keys.
            TypeError: If a value has the wrong type.
        """
        if not isinstance(values, dict):
            raise TypeError(f"{_section_name(cls)}: expected a mapping, got "
                            f"{type(values).__name__} {values!r}")
        valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in '{_section_name(cls)}'; "
                             f"valid keys: {valid}")
        return cls(**values)


def _section_name(cls: type) -> str:
    return {"OptimConfig": "optim", "ScheduleConfig": "schedule",
            "TrainConfig": "train"}.get(cls.__name__, cls.__name__)


def _positive(where: str, value: float | int | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{where} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


@dataclass
class OptimConfig(_Section):
    """Optimiser settings.

    Attributes:
        name: ``"adamw"``, ``"adadelta"`` or ``"sgd"``.
        lr: Base learning rate (the schedule multiplies it).
        weight_decay: Decoupled weight decay (AdamW) or L2 penalty (Adadelta, SGD).
        betas: AdamW betas.
        eps: Numerical epsilon; ``None`` uses the optimiser's default (1e-8 AdamW, 1e-6 Adadelta).
        rho: Adadelta running-average coefficient.
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        grad_clip: Clip the global gradient norm to this value; ``None`` or 0 disables.
        decay_1d: Apply weight decay to 1-D parameters (biases, norms, gains) too. The reference
            scripts decay every parameter, hence the default ``True``; nanoGPT-style is ``False``.
    """

    name: Literal["adamw", "adadelta", "sgd"] = "adamw"
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float | None = None
    rho: float = 0.9
    momentum: float = 0.9
    nesterov: bool = False
    grad_clip: float | None = None
    decay_1d: bool = True

    def _check(self) -> None:
        _positive("optim.lr", self.lr)
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)
        _positive("optim.grad_clip", self.grad_clip, allow_zero=True)
        _positive("optim.eps", self.eps)
        for i, b in enumerate(self.betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"optim.betas[{i}] must be in [0, 1), got {b}")


@dataclass
class ScheduleConfig(_Section):
    """Learning-rate schedule: a multiplier of ``optim.lr`` as a function of time ``t``.

    ``t`` counts optimiser steps (``per="step"``) or completed epochs (``per="epoch"``, the
    learning rate changes only at epoch boundaries, like ``scheduler.step()`` once per epoch).

    Attributes:
        name: ``"constant"``, ``"cosine"`` (``min_lr + (lr - min_lr)(1 + cos(pi t'/T))/2``)
            or ``"step"`` (``gamma ** (t' // step_size)``), with ``t' = t - warmup``.
        per: ``"step"`` or ``"epoch"``.
        warmup: Linear warm-up length in units of ``per``: the multiplier is
            ``(t + 1) / (warmup + 1)`` for ``t < warmup``; 0 disables.
        step_size: Period of ``"step"`` decay, in units of ``per``.
        gamma: Decay factor of ``"step"``.
        min_lr: Final learning rate of ``"cosine"`` (absolute, like ``eta_min``).
        total: Cosine horizon ``T`` in units of ``per`` (after warm-up). ``None``: the whole run
            (``total_steps - warmup`` or ``total_epochs - warmup``).
    """

    name: Literal["constant", "cosine", "step"] = "constant"
    per: Literal["step", "epoch"] = "step"
    warmup: int = 0
    step_size: int = 1
    gamma: float = 0.1
    min_lr: float = 0.0
    total: int | None = None

    def _check(self) -> None:
        _positive("schedule.warmup", self.warmup, allow_zero=True)
        _positive("schedule.step_size", self.step_size)
        _positive("schedule.gamma", self.gamma)
        _positive("schedule.min_lr", self.min_lr, allow_zero=True)
        _positive("schedule.total", self.total)


@dataclass
class TrainConfig(_Section):
    """Loop settings.

    Attributes:
        epochs: Number of epochs (used when ``max_steps`` is ``None``).
        max_steps: Total optimiser steps; overrides ``epochs`` when set.
        batch_size: Per-process batch size, for whoever builds the batch sources (the loop
            itself takes batches as they come). Under DDP the global batch is
            ``batch_size * world_size``.
        eval_batch_size: Evaluation batch size for the builders; ``None`` means ``batch_size``.
        num_workers: DataLoader workers for the builders.
        eval_every: Evaluate every N steps (0: not by steps). Evaluation also runs at the end.
        eval_every_epochs: Evaluate every N epochs (0: not by epochs).
        log_every: Write a training record to ``metrics.jsonl`` every N steps.
        checkpoint_every: Write ``last.pt`` every N steps (0: not by steps).
        checkpoint_every_epochs: Write ``last.pt`` every N epochs (0: not by epochs).
            ``last.pt`` is always written at the end.
        seed: Seed of the training stream (dropout, augmentation, ...).
        precision: ``"fp32"`` or ``"bf16"`` (``torch.autocast`` on the model's device type).
        out_dir: Where ``config.yaml``, ``metrics.jsonl``, ``last.pt``, ``best.pt`` go;
            ``None`` writes nothing (``fit(out_dir=...)`` overrides).
        best_metric: Evaluation metric deciding ``best.pt`` (e.g. ``"top1"``, ``"loss"``);
            ``None`` uses the task's default.
        best_mode: ``"min"``, ``"max"`` or ``"auto"`` (from the task's metric directions).
        save_best: Keep ``best.pt``.
        csv: Also write ``metrics_train.csv`` / ``metrics_eval.csv``.
        progress: Show a tqdm bar (rank 0, interactive terminals only).
        compile: Wrap the model in ``torch.compile``.
        deterministic: Ask torch for deterministic algorithms.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available
            (under DDP, ``cuda:LOCAL_RANK``).
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 0
    eval_every: int = 0
    eval_every_epochs: int = 0
    log_every: int = 50
    checkpoint_every: int = 0
    checkpoint_every_epochs: int = 1
    seed: int = 0
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

    def _check(self) -> None:
        _positive("train.epochs", self.epochs)
        _positive("train.max_steps", self.max_steps)
        _positive("train.batch_size", self.batch_size)
        _positive("train.eval_batch_size", self.eval_batch_size)
        _positive("train.log_every", self.log_every)
        for name in ("num_workers", "eval_every", "eval_every_epochs", "checkpoint_every",
                     "checkpoint_every_epochs", "seed"):
            _positive(f"train.{name}", getattr(self, name), allow_zero=True)


_SECTIONS: dict[str, type] = {"train": TrainConfig, "optim": OptimConfig,
                              "schedule": ScheduleConfig}
_OPAQUE = ("model", "data")


@dataclass
class RunConfig:
    """Everything a run needs.

    Attributes:
        model: Model name and overrides, passed through opaquely (e.g. ``{"name": "vit"}``).
        data: Data settings, passed through opaquely.
        train: Loop settings.
        optim: Optimiser settings.
        schedule: Learning-rate schedule.
    """

    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        for name in _OPAQUE:
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise TypeError(f"{name}: expected a mapping, got {type(value).__name__} {value!r}")
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls.from_dict(value))
            elif not isinstance(value, cls):
                raise TypeError(f"{name}: expected {cls.__name__} or a mapping, "
                                f"got {type(value).__name__}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "RunConfig":
        """Build from a nested mapping (e.g. parsed YAML); missing sections take defaults.

        Raises:
            ValueError: On an unknown section or key; the message lists the valid ones.
            TypeError: On a value of the wrong type.
        """
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise TypeError(f"config: expected a mapping at the top level, got "
                            f"{type(values).__name__}")
        valid = list(_OPAQUE) + list(_SECTIONS)
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; valid sections: {valid}")
        kwargs = {k: ({} if v is None else v) for k, v in values.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists) suitable for YAML/JSON."""
        return config_to_dict(self)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Return ``cfg`` as nested plain Python values (dicts, lists, scalars)."""
    return _plain(dataclasses.asdict(cfg))


def _parse_override(item: str) -> tuple[list[str], Any]:
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"override must look like 'section.key=value', got {item!r}")
    key, raw = item.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ValueError(f"override key must be a dotted path like 'optim.lr', got {key!r}")
    value = yaml.safe_load(raw) if raw.strip() else None
    return path, value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a nested config mapping (returns a new mapping).

    Keys of the ``train``/``optim``/``schedule`` sections are checked here so that the error
    names the override; ``model``/``data`` accept any (nested) key.

    Args:
        values: Nested mapping as read from YAML.
        overrides: Items such as ``"optim.lr=1e-3"`` or ``"model.depth=2"``; values are parsed
            with ``yaml.safe_load`` (``[0.9, 0.95]``, ``true``, ``null`` work).

    Raises:
        ValueError: On a malformed item or an unknown section/key.
    """
    out = _plain(values)
    valid_sections = list(_OPAQUE) + list(_SECTIONS)
    for item in overrides:
        path, value = _parse_override(item)
        section = path[0]
        if section not in valid_sections:
            raise ValueError(f"override {item!r}: unknown section {section!r}; "
                             f"valid sections: {valid_sections}")
        if len(path) == 1:
            out[section] = value
            continue
        if section in _SECTIONS:
            valid = [f.name for f in dataclasses.fields(_SECTIONS[section])]
            if len(path) != 2 or path[1] not in valid:
                raise ValueError(f"override {item!r}: unknown key {'.'.join(path[1:])!r} in "
                                 f"'{section}'; valid keys: {valid}")
        node = out.setdefault(section, {})
        if node is None:
            node = out[section] = {}
        for part in path[1:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return out


def load_config(path: str | os.PathLike | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML run configuration (or start from defaults) and apply overrides.

    Args:
        path: YAML file with any of the sections ``model``, ``data``, ``train``, ``optim``,
            ``schedule``; ``None`` starts from defaults.
        overrides: ``key=value`` items with dotted keys, applied in order.

    Returns:
        The resolved :class:`RunConfig`.

    Raises:
        ValueError: If the file is missing or not valid YAML, or on an unknown key (the message
            lists the valid keys) or a bad value.
        TypeError: If a value has the wrong type.
    """
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"config file {str(p)!r} is not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config file {str(p)!r} must hold a mapping at the top level, "
                             f"got {type(loaded).__name__}")
        values = loaded or {}
    return RunConfig.from_dict(apply_overrides(values, list(overrides)))


def save_config(cfg: RunConfig, path: str | os.PathLike) -> Path:
    """Write the resolved configuration as YAML (atomically) and return the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    os.replace(tmp, p)
    return p
