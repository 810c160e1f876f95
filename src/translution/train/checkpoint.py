"""Atomic, validated training checkpoints.

A checkpoint is a ``torch.save`` dict: ``format`` (``"translution.train/1"``), ``model`` (the
unwrapped model's ``state_dict``), ``optimizer`` and ``scheduler`` states (or ``None``), ``rng``
(one :func:`~translution.train.rng.capture_rng_state` per rank), ``step``, ``epoch`` (of the
next step), ``config`` (the run config as a dict), ``best`` (``{"metric", "mode", "value",
"step"}``), ``extra`` (loop bookkeeping) and, like nanoGPT's ``model_args``, ``model_config``
(``model.config.to_dict()``, from which :func:`translution.models.model_from_config` rebuilds the
model) and ``tokenizer`` (a language model's tokenizer meta); older files load with those two
``None``.

Writes are atomic (:func:`translution.utils.atomic_write`); with ``keep_previous`` the replaced
file becomes ``prev.pt``, the fallback of :func:`resume_checkpoint`. Loading checks the CRC-32
of every member of the zip archive (a flipped bit is refused, not loaded as a wrong weight),
uses ``weights_only=True``, checks the format, and raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils import atomic_write, remove_stale_temporaries
from .distributed import unwrap_model
from .rng import restore_rng_state

__all__ = ["CHECKPOINT_FORMAT", "REQUIRED_KEYS", "save_checkpoint", "load_checkpoint",
           "atomic_torch_save", "resume_checkpoint", "remove_run_temporaries"]

log = logging.getLogger("translution.train")

CHECKPOINT_FORMAT = "translution.train/1"
REQUIRED_KEYS = ("format", "model", "optimizer", "scheduler", "rng", "step", "epoch",
                 "config", "best", "extra")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`translution.utils.atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def model_config(model: nn.Module) -> dict | None:
    """``config.to_dict()`` of the unwrapped model, or ``None`` when it has no such config."""
    config = getattr(unwrap_model(model), "config", None)
    return config.to_dict() if callable(getattr(config, "to_dict", None)) else None


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    step: int = 0, epoch: int = 0, rng: list[dict] | None = None,
                    config: dict | None = None, best: dict | None = None,
                    extra: dict | None = None, tokenizer: dict | None = None,
                    keep_previous: bool = False) -> Path:
    """Write a checkpoint atomically (see the module docstring for the keys); DDP / compiled
    wrappers are stripped from ``model``; ``extra`` holds anything ``weights_only`` loading
    accepts. ``keep_previous`` first moves an existing ``path`` to ``prev.pt``."""
    obj = {"format": CHECKPOINT_FORMAT, "model": unwrap_model(model).state_dict(),
           "optimizer": None if optimizer is None else optimizer.state_dict(),
           "scheduler": None if scheduler is None else scheduler.state_dict(),
           "rng": rng, "step": int(step), "epoch": int(epoch), "config": config, "best": best,
           "extra": {} if extra is None else extra, "model_config": model_config(model),
           "tokenizer": tokenizer}
    path = Path(path)
    if keep_previous and path.exists():
        os.replace(path, path.with_name("prev.pt"))
    return atomic_torch_save(obj, path)


def _check_archive(path: Path) -> None:
    """Refuse a file that is no zip archive or whose members fail their CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"checkpoint file {str(path)!r} is corrupt or truncated (not a "
                         f"complete torch.save archive: {e})") from e
    if bad is not None:
        raise ValueError(f"checkpoint file {str(path)!r} is damaged: its member {bad!r} fails "
                         f"its CRC-32 check (the file changed after it was written); refusing "
                         f"to load it")


def _torch_load(path: Path, map_location: Any, weights_only: bool) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise ValueError(f"checkpoint file {str(path)!r} is corrupt or truncated "
                             f"({str(e).splitlines()[0]})") from e
        names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(e)))) or ["unknown objects"]
        raise ValueError(f"checkpoint file {str(path)!r} holds objects that are not allowed "
                         f"in a checkpoint ({', '.join(names)}); only tensors and plain "
                         f"containers load, so this file was not written by "
                         f"save_checkpoint and is refused") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, ImportError, IndexError) as e:
        raise ValueError(f"checkpoint file {str(path)!r} is corrupt or truncated "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from e


def _read(path: Path, map_location: Any, weights_only: bool) -> dict[str, Any]:
    expected = f"a checkpoint dict with keys {list(REQUIRED_KEYS)} written by save_checkpoint"
    if not path.exists():
        raise ValueError(f"checkpoint file {str(path)!r} does not exist; expected {expected}")
    if not path.is_file():
        raise ValueError(f"checkpoint path {str(path)!r} is not a file; expected {expected}")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint file {str(path)!r} is empty; expected {expected}")
    _check_archive(path)
    obj = _torch_load(path, map_location, weights_only)
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint file {str(path)!r} holds a {type(obj).__name__}; "
                         f"expected {expected}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise ValueError(f"checkpoint file {str(path)!r} is missing keys {missing}; "
                         f"expected {expected}")
    if obj["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint file {str(path)!r} has format {obj['format']!r}; "
                         f"expected {CHECKPOINT_FORMAT!r}")
    obj.setdefault("model_config", None)
    obj.setdefault("tokenizer", None)
    return obj


def _load_into(target: Any, state: Any, path: Path, what: str, errors: tuple) -> None:
    if state is None:
        raise ValueError(f"checkpoint file {str(path)!r} holds no {what} state")
    try:
        target.load_state_dict(state)
    except errors as e:
        raise ValueError(f"checkpoint file {str(path)!r} has {what} state that does not fit "
                         f"{type(target).__name__}: {e}") from e


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, *,
                    rank: int = 0, restore_rng: bool = False, strict: bool = True,
                    map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """Read and validate a checkpoint, loading it into the given live objects.

    Args:
        model, optimizer, scheduler: Receive their states when given (wrappers stripped).
        rank: Which saved RNG state ``restore_rng`` restores (modulo the number saved).
        strict: Of ``model.load_state_dict``.
        map_location, weights_only: Of ``torch.load``.

    Returns:
        The checkpoint dict.

    Raises:
        ValueError: A missing, empty, corrupt, truncated or foreign file, or one that does not
            fit the objects; the message names the file.
    """
    p = Path(path)
    obj = _read(p, map_location, weights_only)
    if model is not None:
        try:
            unwrap_model(model).load_state_dict(obj["model"], strict=strict)
        except RuntimeError as e:
            raise ValueError(f"checkpoint file {str(p)!r} does not fit model "
                             f"{type(unwrap_model(model)).__name__}: {e}") from e
    if optimizer is not None:
        _load_into(optimizer, obj["optimizer"], p, "optimizer", (ValueError, KeyError,
                                                                 RuntimeError))
    if scheduler is not None:
        _load_into(scheduler, obj["scheduler"], p, "scheduler", (ValueError, KeyError, TypeError))
    if restore_rng:
        states = obj["rng"]
        if not states:
            raise ValueError(f"checkpoint file {str(p)!r} holds no RNG state")
        try:
            restore_rng_state(states[rank % len(states)])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise ValueError(f"checkpoint file {str(p)!r} has invalid RNG state: {e}") from e
    return obj


def remove_run_temporaries(out_dir: str | os.PathLike) -> int:
    """Delete the temporaries that killed writers left in a run folder; returns how many."""
    out = Path(out_dir)
    names = ("last.pt", "best.pt", "prev.pt", "config.yaml", "metrics.jsonl")
    return sum(remove_stale_temporaries(out / name) for name in names)


def resume_checkpoint(out_dir: str | os.PathLike | None, explicit: str | os.PathLike | None,
                      load: Any) -> tuple[Path, dict[str, Any]] | None:
    """Load the checkpoint to resume from with ``load(path)``; ``None`` if there is none.

    An ``explicit`` path is loaded as it is. Otherwise ``out_dir/last.pt`` is tried, and when it
    is missing or damaged, ``out_dir/prev.pt`` (with a warning naming both).

    Raises:
        ValueError: The explicit file, or every candidate, is damaged (the first error).
    """
    if explicit is not None:
        return Path(explicit), load(Path(explicit))
    if out_dir is None:
        return None
    last, prev = Path(out_dir) / "last.pt", Path(out_dir) / "prev.pt"
    if not last.exists() and not prev.exists():
        return None
    try:
        return last, load(last)
    except ValueError as e:
        if not prev.exists():
            raise
        log.warning("%s; falling back to %s", e, prev)
        try:
            return prev, load(prev)
        except ValueError:
            raise e from None
