"""Top-k counts and ``metrics.jsonl``: one JSON record per line with ``event`` (``"train"`` or
``"eval"``), ``step``, ``epoch`` (``step / steps_per_epoch``), ``time`` (training seconds, over
resumes), and ``lr``, ``loss``... (training) or the task's metrics (evaluation)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch

from ..utils import atomic_write_text

__all__ = ["topk_correct", "MetricsLogger", "read_metrics", "write_csv"]


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Iterable[int] = (1, 5)
                 ) -> dict[int, int]:
    """``{k: samples whose target is among the top-k}`` of ``logits`` ``(B, C)`` and targets
    ``(B,)`` or soft ``(B, C)`` (argmax used); a ``k`` above ``C`` counts every sample."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    if targets.ndim == 2:
        targets = targets.argmax(dim=1)
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must be (B,) or (B, C) matching logits "
                         f"{tuple(logits.shape)}, got {tuple(targets.shape)}")
    ks = list(ks)
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices                        # (B, kmax)
    hit = top.eq(targets.unsqueeze(1))                            # (B, kmax)
    return {k: int(hit[:, :min(k, kmax)].any(dim=1).sum()) for k in ks}


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan" / "inf": JSON has no literal for them
    return value


def _jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


class MetricsLogger:
    """Append records to ``out_dir/metrics.jsonl`` (``None``, as on ranks other than 0: nothing
    written); ``csv`` also keeps ``metrics_<event>.csv`` (:meth:`flush_csv`)."""

    def __init__(self, out_dir: str | os.PathLike | None, *, csv: bool = False) -> None:
        self.path = None if out_dir is None else Path(out_dir) / "metrics.jsonl"
        self.csv = csv

    def _file(self) -> Path | None:
        """The file when writing is on and it exists."""
        return self.path if self.path is not None and self.path.exists() else None

    def log(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append one record (tensors become floats) and return it."""
        record = {k: _jsonable(v) for k, v in record.items()}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(_jsonl([record]))
        return record

    def truncate_after(self, step: int) -> None:
        """Drop records after ``step`` (an interrupted run's last checkpoint) before resuming."""
        if path := self._file():
            atomic_write_text(path, _jsonl(r for r in read_metrics(path)
                                           if int(r.get("step", 0)) <= step))

    def reset(self) -> None:
        """Delete ``metrics.jsonl`` (a fresh, non-resumed run)."""
        if path := self._file():
            path.unlink()

    def flush_csv(self) -> None:
        """Rewrite ``metrics_<event>.csv`` from ``metrics.jsonl`` when CSV output is on."""
        if self.csv and (path := self._file()):
            write_csv(path)


def read_metrics(path: str | os.PathLike, event: str | None = None) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (of one ``event`` kind); a torn last line (an
    interrupted write) is dropped with a warning, any other bad line is a ValueError."""
    text = Path(path).read_text()
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) and not text.endswith("\n"):
                warnings.warn(f"{str(path)!r} line {i} is an incomplete record (an interrupted "
                              f"write); dropped: {line[:80]!r}", stacklevel=2)
                break
            raise ValueError(f"{str(path)!r} line {i} is not valid JSON: {e}") from e
        if event is None or rec.get("event") == event:
            out.append(rec)
    return out


def write_csv(jsonl_path: str | os.PathLike) -> None:
    """Write ``metrics_<event>.csv``, one per event kind, next to a ``metrics.jsonl`` file."""
    p = Path(jsonl_path)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for r in read_metrics(p):
        by_event.setdefault(str(r.get("event", "record")), []).append(r)
    for event, recs in by_event.items():
        columns = list(dict.fromkeys(k for r in recs for k in r if k != "event"))
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(recs)
        atomic_write_text(p.with_name(f"metrics_{event}.csv"), text.getvalue())
