"""Atomic, validated, self-describing training checkpoints: a ``torch.save`` dict of
:data:`REQUIRED_KEYS`, ``model_config`` (for :func:`translution.models.model_from_config`) and
``tokenizer`` meta; loading checks CRC-32s, uses ``weights_only`` and raises ``ValueError``."""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..utils import atomic_write, remove_stale_temporaries
from .distributed import unwrap_model
from .rng import restore_rng_state

__all__ = ["CHECKPOINT_FORMAT", "REQUIRED_KEYS", "save_checkpoint", "load_checkpoint",
           "resume_checkpoint", "remove_run_temporaries"]

log = logging.getLogger("translution.train")

CHECKPOINT_FORMAT = "translution.train/1"
#: ``model``: the unwrapped state_dict; ``rng``: one per rank; ``epoch``: of the next step;
#: ``config``: the run config; ``best``: ``{metric, mode, value, step}``; ``extra``: loop state.
REQUIRED_KEYS = ("format", "model", "optimizer", "scheduler", "rng", "step", "epoch",
                 "config", "best", "extra")
_EXPECTED = f"expected a checkpoint dict with keys {list(REQUIRED_KEYS)} written by save_checkpoint"


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    step: int = 0, epoch: int = 0, rng: list[dict] | None = None,
                    config: dict | None = None, best: dict | None = None,
                    extra: dict | None = None, tokenizer: dict | None = None,
                    keep_previous: bool = False) -> Path:
    """Write a checkpoint atomically (wrappers stripped from ``model``; ``extra``: anything
    ``weights_only`` loads); ``keep_previous`` first moves an existing ``path`` to ``prev.pt``."""
    model = unwrap_model(model)
    model_config = getattr(model, "config", None)       # a model config (``to_dict``) or None
    obj = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
           "optimizer": None if optimizer is None else optimizer.state_dict(),
           "scheduler": None if scheduler is None else scheduler.state_dict(),
           "rng": rng, "step": int(step), "epoch": int(epoch), "config": config, "best": best,
           "extra": {} if extra is None else extra, "tokenizer": tokenizer,
           "model_config": model_config.to_dict() if hasattr(model_config, "to_dict") else None}
    path = Path(path)
    if keep_previous and path.exists():
        os.replace(path, path.with_name("prev.pt"))
    return atomic_write(path, lambda f: torch.save(obj, f))


def _bad(path: Path, why: str) -> ValueError:
    return ValueError(f"checkpoint file {str(path)!r} {why}")


def _check_archive(path: Path) -> None:
    """Refuse a file that is no zip archive or whose members fail their CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise _bad(path, f"is corrupt or truncated (not a complete torch.save archive: {e})") from e
    if bad is not None:
        raise _bad(path, f"is damaged: its member {bad!r} fails its CRC-32 check (the file "
                         f"changed after it was written); refusing to load it")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many kinds of error on a damaged file
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e):
            names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(e)))) or ["unknown objects"]
            raise _bad(path, f"holds objects that are not allowed in a checkpoint "
                             f"({', '.join(names)}); only tensors and plain containers load, so "
                             f"this file was not written by save_checkpoint and is refused"
                       ) from None
        first = str(e).splitlines()[0] if str(e) else ""
        raise _bad(path, f"is corrupt or truncated ({type(e).__name__}: {first})") from e


def _read(path: Path) -> dict[str, Any]:
    problem = ("does not exist" if not path.exists() else "is not a file" if not path.is_file()
               else "is empty" if path.stat().st_size == 0 else None)
    if problem:
        raise _bad(path, f"{problem}; {_EXPECTED}")
    _check_archive(path)
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise _bad(path, f"holds a {type(obj).__name__}; {_EXPECTED}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise _bad(path, f"is missing keys {missing}; {_EXPECTED}")
    if obj["format"] != CHECKPOINT_FORMAT:
        raise _bad(path, f"has format {obj['format']!r}; expected {CHECKPOINT_FORMAT!r}")
    obj.setdefault("model_config", None)
    obj.setdefault("tokenizer", None)
    return obj


def _load_part(path: Path, what: str, target: str, state: Any, load: Callable) -> None:
    """``load(state)``, every failure a ValueError naming the file and the part."""
    if state is None:
        raise _bad(path, f"holds no {what} state")
    try:
        load(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise _bad(path, f"does not fit {target}: {e}") from e


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None, *,
                    rank: int = 0, restore_rng: bool = False) -> dict[str, Any]:
    """Read and validate a checkpoint (returned, on the CPU), loading it into the given live
    objects (wrappers stripped) and, with ``restore_rng``, the saved RNG ``rank % saved``; a
    missing, damaged, foreign or unfitting file is a ValueError."""
    p = Path(path)
    obj = _read(p)
    model = None if model is None else unwrap_model(model)
    for what, target in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
        if target is not None:
            _load_part(p, what, f"{what} {type(target).__name__}", obj[what],
                       target.load_state_dict)
    if restore_rng:
        states = obj["rng"]
        _load_part(p, "RNG", "the RNG state format", states[rank % len(states)] if states
                   else None, restore_rng_state)
    return obj


def remove_run_temporaries(out_dir: str | os.PathLike) -> int:
    """Delete the temporaries that killed writers left in a run folder; returns how many."""
    names = ("last.pt", "best.pt", "prev.pt", "config.yaml", "metrics.jsonl")
    return sum(remove_stale_temporaries(Path(out_dir) / name) for name in names)


def resume_checkpoint(out_dir: str | os.PathLike | None, resume: bool | str | os.PathLike,
                      load: Callable[[Path], dict]) -> tuple[Path, dict[str, Any]] | None:
    """``(path, load(path))`` of the checkpoint to resume from, or ``None``: ``resume`` if a path,
    else (if true) ``out_dir/last.pt`` or, when missing or damaged, ``prev.pt`` (with a warning)."""
    if isinstance(resume, (str, os.PathLike)):
        return Path(resume), load(Path(resume))
    if not resume or out_dir is None:
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
