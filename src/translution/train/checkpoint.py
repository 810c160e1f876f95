"""Atomic, validated training checkpoints.

A checkpoint is a ``torch.save`` file holding a dict with these keys:

========== ==================================================================
format     ``"translution.train/1"``
model      ``state_dict()`` of the unwrapped model
optimizer  optimiser ``state_dict()`` (or ``None``)
scheduler  :class:`~translution.train.schedule.LRSchedule` state (or ``None``)
rng        list with one :func:`~translution.train.rng.capture_rng_state` per rank
step       optimiser steps taken
epoch      epoch the next step belongs to (``step // steps_per_epoch``)
config     resolved run configuration as a plain dict (or ``None``)
best       ``{"metric", "mode", "value", "step"}`` (or ``None``)
extra      free-form dict (loop bookkeeping, user data)
========== ==================================================================

and, to describe the model without the code or data that trained it (nanoGPT's ``model_args``):

============ ================================================================
model_config ``model.config.to_dict()`` of the unwrapped model (``None`` for models without
             one); :func:`translution.models.model_from_config` rebuilds the model from it
tokenizer    tokenizer meta (:meth:`Tokenizer.to_meta`) of a language model, else ``None``
============ ================================================================

Files written before ``model_config`` existed load with both set to ``None``.

Files are written with :func:`translution.utils.atomic_write` (temporary file, fsync,
``os.replace``), so a crash never leaves a half-written ``last.pt``; with ``keep_previous`` the
file being replaced becomes ``prev.pt``, the fallback of :func:`resume_checkpoint`. Loading
checks the CRC-32 of every member of the zip archive ``torch.save`` writes (a flipped bit is
refused, not loaded as a wrong weight), uses ``weights_only=True`` and checks the format,
raising ``ValueError`` naming the file.
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
    """Write a checkpoint atomically.

    Args:
        path: Destination file.
        model: Model (DDP / compiled wrappers are stripped before ``state_dict()``).
        optimizer: Optimiser to save, if any.
        scheduler: Object with ``state_dict()`` (e.g. ``LRSchedule``), if any.
        step: Optimiser steps taken.
        epoch: Epoch of the next step.
        rng: Per-rank RNG states (``capture_rng_state()`` each); ``None`` saves none.
        config: Resolved configuration as a plain dict.
        best: Best-metric bookkeeping.
        extra: Anything else ``weights_only`` loading accepts (tensors, plain containers).
        tokenizer: Tokenizer meta of a language model (``Tokenizer.to_meta()``).
        keep_previous: Move an existing ``path`` to ``prev.pt`` in the same folder first.

    Returns:
        The path written.
    """
    obj = {
        "format": CHECKPOINT_FORMAT,
        "model": unwrap_model(model).state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": rng,
        "step": int(step),
        "epoch": int(epoch),
        "config": config,
        "best": best,
        "extra": {} if extra is None else extra,
        "model_config": model_config(model),
        "tokenizer": tokenizer,
    }
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


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, *,
                    rank: int = 0, restore_rng: bool = False, strict: bool = True,
                    map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """Read and validate a checkpoint, optionally loading it into live objects.

    Args:
        path: Checkpoint file.
        model: If given, receives the model weights (wrappers are stripped).
        optimizer: If given, receives the optimiser state.
        scheduler: If given, receives the scheduler state (``load_state_dict``).
        rank: Which saved RNG state to restore (taken modulo the number saved).
        restore_rng: Restore Python/NumPy/torch RNG states (exact resume).
        strict: Passed to ``model.load_state_dict``.
        map_location: Passed to ``torch.load``.
        weights_only: Passed to ``torch.load``; ``True`` refuses arbitrary pickled objects.

    Returns:
        The checkpoint dict (see the module docstring).

    Raises:
        ValueError: If the file is missing, empty, corrupt, truncated, lacks a key, has another
            format, or does not fit the model/optimiser; the message names the file.
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
        if obj["optimizer"] is None:
            raise ValueError(f"checkpoint file {str(p)!r} holds no optimizer state; expected "
                             f"one for {type(optimizer).__name__}")
        try:
            optimizer.load_state_dict(obj["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise ValueError(f"checkpoint file {str(p)!r} has optimizer state that does not "
                             f"fit {type(optimizer).__name__}: {e}") from e
    if scheduler is not None:
        if obj["scheduler"] is None:
            raise ValueError(f"checkpoint file {str(p)!r} holds no scheduler state")
        try:
            scheduler.load_state_dict(obj["scheduler"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"checkpoint file {str(p)!r} has scheduler state that does not "
                             f"fit: {e}") from e
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
