"""Pieces shared by the experiments: arms × seeds runs, mean ± std, parameter matching.

An experiment is a list of arms (report label → model section) trained for several seeds with
:func:`translution.train.fit`, plus a report step. :func:`run_arms` runs them seed by seed
(every arm at seed 0 first, so a partial run already gives a full table), calls back after every
run (write results as they come) and trains an arm only once when two labels share a run
folder. :func:`seed_summary` turns per-seed records into ``{metric, metric_std, seeds, ...}``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import torch

__all__ = ["mean_std", "seed_summary", "run_arms", "run_slug", "check_fingerprint",
           "parameter_count", "grow_to_match"]


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value).

    Raises:
        ValueError: No values.
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value, got none")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def seed_summary(records: Sequence[Mapping[str, Any]], metric: str) -> Dict[str, Any]:
    """Summary of one arm over seeds.

    Args:
        records: One dict per seed with ``metric``, ``parameters``, ``seconds`` and ``steps``.
        metric: The key averaged (e.g. ``"accuracy"``).

    Returns:
        ``{metric: mean, metric_std: sample std, "seeds": [per-seed values], "parameters",
        "seconds": mean training seconds per run, "seconds_std", "steps"}``.
    """
    mean, std = mean_std([r[metric] for r in records])
    seconds, seconds_std = mean_std([r["seconds"] for r in records])
    return {metric: mean, f"{metric}_std": std, "seeds": [r[metric] for r in records],
            "parameters": records[0]["parameters"], "seconds": seconds,
            "seconds_std": seconds_std, "steps": records[0]["steps"]}


def run_arms(arms: Mapping[str, str], seeds: Sequence[int],
             train: Callable[[str, int], Dict[str, Any]],
             on_result: Callable[[Dict[str, List[Dict[str, Any]]]], None] = lambda r: None
             ) -> Dict[str, List[Dict[str, Any]]]:
    """Train every arm for every seed, seed by seed.

    Args:
        arms: Report label → run key (labels with the same key share one run per seed).
        seeds: The seeds.
        train: ``train(label, seed) -> record`` (trains or resumes one run).
        on_result: Called with the records so far after every run.

    Returns:
        Label → list of records, one per seed, in ``seeds`` order.
    """
    done: Dict[Tuple[str, int], Dict[str, Any]] = {}
    records: Dict[str, List[Dict[str, Any]]] = {label: [] for label in arms}
    for seed in seeds:
        for label, key in arms.items():
            if (key, seed) not in done:
                done[key, seed] = train(label, seed)
            records[label].append(done[key, seed])
            on_result({k: v for k, v in records.items() if v})
    return records


def run_slug(attention: str, overrides: Mapping[str, Any]) -> str:
    """A folder name for an arm: ``translution``, ``translution-relative_q``, ..."""
    name = "-".join([attention] + [f"{k}_{v}" for k, v in sorted(overrides.items())])
    return re.sub(r"[^a-z0-9_.-]+", "", name.lower())


def check_fingerprint(run_dir: Path, fingerprint: Mapping[str, Any]) -> None:
    """Write ``run_dir/run.json`` the first time; refuse a folder holding other settings.

    Raises:
        ValueError: ``run_dir`` was made with another fingerprint.
    """
    from ..utils import atomic_write_json
    path = Path(run_dir) / "run.json"
    plain = json.loads(json.dumps(fingerprint))
    if path.is_file():
        if json.loads(path.read_text()) != plain:
            raise ValueError(f"{run_dir} holds a run with other settings (model, data or "
                             f"recipe differ); use another output folder or delete {run_dir}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, plain)


def parameter_count(section: Mapping[str, Any]) -> int:
    """Parameters of the model ``{"name": ..., **overrides}``, built on the meta device (no
    memory, no initialisation cost)."""
    from ..recipes import build_model
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(dict(section)).parameters())


def grow_to_match(count: Callable[[int], int], target: int, start: int) -> int:
    """The ``n >= start`` whose ``count(n)`` is closest to ``target``, for a non-decreasing
    ``count`` (doubling, then bisection)."""
    lo, hi = start, start
    while count(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda n: (abs(count(n) - target), n))
