"""Small shared helpers: atomic writes, digests, validation, timing, optional imports."""

from __future__ import annotations

import hashlib
import importlib
import json
import operator
import os
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Union

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "sha256_bytes", "sha256_file", "check_int", "check_bool", "Stopwatch",
           "remove_stale_temporaries", "require"]

PathLike = Union[str, os.PathLike]
_TMP_MARK = ".tmp-"


def atomic_write(path: PathLike, write: Callable[[Any], None]) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary binary file next to it, fsynced
    and moved onto ``path`` (a killed writer leaves it: :func:`remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{_TMP_MARK}{os.getpid()}-", dir=path.parent)
    umask = os.umask(0o22)
    os.umask(umask)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o666 & ~umask)  # as open() would create it (mkstemp makes it 0600)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    """:func:`atomic_write` of ``obj`` as indented JSON (UTF-8, trailing newline)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def remove_stale_temporaries(path: PathLike) -> int:
    """Delete temporaries that killed writers of ``path`` left behind; returns how many."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}{_TMP_MARK}*")) if path.parent.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of the file at ``path``."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def require(module: str, extra: Optional[str] = None) -> ModuleType:
    """``import module``, or an ``ImportError`` saying what to install: translution's ``extra``,
    else the module's own package."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.partition(".")[0]
        raise ImportError(f"needs {package}: pip install "
                          + (f"'translution[{extra}]'" if extra else package)) from exc


def check_int(name: str, value: Any, minimum: Optional[int] = None) -> int:
    """``value`` as an int (bools refused), at least ``minimum``; ``ValueError``/``TypeError``
    naming ``name`` and the value otherwise."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a real bool (``"yes"``, ``1`` and ``None`` are refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


class Stopwatch:
    """Wall-clock timer that can be paused: ``with watch: ...`` adds the block's time to
    ``watch.seconds``; ``watch.seconds`` also counts a running block."""

    def __init__(self, seconds: float = 0.0):
        self._done = float(seconds)
        self._start: Optional[float] = None

    def __enter__(self) -> "Stopwatch":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._done += time.perf_counter() - self._start
        self._start = None

    @property
    def seconds(self) -> float:
        running = 0.0 if self._start is None else time.perf_counter() - self._start
        return self._done + running
