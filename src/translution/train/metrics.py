"""Metric helpers and the ``metrics.jsonl`` writer.

Every record is one JSON object per line with at least ``event`` (``"train"`` or ``"eval"``),
``step``, ``epoch`` (fractional: ``step / steps_per_epoch``) and ``time`` (seconds of training
so far, continued across resumes). Training records add ``lr``, ``loss`` and whatever the task
reports; evaluation records add the task's metrics (``top1``/``top5`` in percent, ``loss``,
``ppl``...).
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch

__all__ = ["topk_correct", "MetricsLogger", "read_metrics", "write_csv"]


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Iterable[int] = (1, 5)
                 ) -> dict[int, int]:
    """Count samples whose target is among the top-k logits.

    Args:
        logits: ``(B, C)`` scores.
        targets: ``(B,)`` class indices, or ``(B, C)`` soft targets (their argmax is used).
        ks: The k values; a k larger than ``C`` counts every sample.

    Returns:
        ``{k: number of hits}``.

    Raises:
        ValueError: If the shapes disagree.
    """
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


class MetricsLogger:
    """Append records to ``metrics.jsonl`` (and optionally CSV files) in a directory.

    Args:
        out_dir: Directory; ``None`` keeps records in memory only.
        enabled: Write files (``False`` on ranks other than 0).
        csv: Also maintain ``metrics_<event>.csv`` (rewritten by :meth:`flush_csv`).
    """

    def __init__(self, out_dir: str | os.PathLike | None, *, enabled: bool = True,
                 csv: bool = False) -> None:
        self.path = None if out_dir is None else Path(out_dir) / "metrics.jsonl"
        self.enabled = enabled and self.path is not None
        self.csv = csv
        self.records: list[dict[str, Any]] = []

    def log(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append one record (tensors become floats) and return it."""
        record = {k: _jsonable(v) for k, v in record.items()}
        self.records.append(record)
        if self.enabled and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    def truncate_after(self, step: int) -> None:
        """Drop records with ``step > step`` (those an interrupted run wrote after its last
        checkpoint), so a resumed run does not duplicate them."""
        if not self.enabled or self.path is None or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)

    def reset(self) -> None:
        """Delete ``metrics.jsonl`` (a fresh, non-resumed run)."""
        if self.enabled and self.path is not None and self.path.exists():
            self.path.unlink()

    def flush_csv(self) -> None:
        """Rewrite ``metrics_<event>.csv`` from ``metrics.jsonl`` when CSV output is on."""
        if self.enabled and self.csv and self.path is not None and self.path.exists():
            write_csv(self.path)


def read_metrics(path: str | os.PathLike, event: str | None = None) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl``, optionally keeping only one ``event`` kind.

    A final line without its newline that is not valid JSON is a record torn by an
    interrupted write (kill -9, a full disk); it is dropped with a warning.

    Raises:
        ValueError: If any other line is not valid JSON (the message names file and line).
    """
    p = Path(path)
    text = p.read_text()
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) and not text.endswith("\n"):
                warnings.warn(f"{str(p)!r} line {i} is an incomplete record (an interrupted "
                              f"write); dropped: {line[:80]!r}", stacklevel=2)
                break
            raise ValueError(f"{str(p)!r} line {i} is not valid JSON: {e}") from e
        if event is None or rec.get("event") == event:
            out.append(rec)
    return out


def write_csv(jsonl_path: str | os.PathLike) -> list[Path]:
    """Write one CSV per event kind next to a ``metrics.jsonl`` file; return the paths."""
    p = Path(jsonl_path)
    records = read_metrics(p)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_event.setdefault(str(r.get("event", "record")), []).append(r)
    written = []
    for event, recs in by_event.items():
        columns: list[str] = []
        for r in recs:
            columns += [k for k in r if k not in columns and k != "event"]
        out = p.with_name(f"metrics_{event}.csv")
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(recs)
        os.replace(tmp, out)
        written.append(out)
    return written
