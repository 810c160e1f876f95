"""The shared runner of the experiments: arms (report label → model) × seeds, run seed by seed
(:func:`run_arms`), each through :func:`read_or_train` (resumable, ``result.json`` per run)."""

from __future__ import annotations

import bisect
import contextlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import (Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence,
                    Tuple)

import torch

from ..train.config import Section, bounded
from ..utils import Stopwatch, atomic_write_json

__all__ = ["ExperimentSettings", "mean_std", "seed_stats", "seed_summary", "markdown_table", "pm",
           "run_arms", "read_or_train", "fit_with_bar", "running", "check_fingerprint",
           "parameter_count", "grow_to_match"]


@dataclass
class ExperimentSettings(Section):
    """Settings every experiment has: seeds ``seed … seed + seeds − 1`` per arm, AdamW's ``lr``,
    ``weight_decay`` (matrices only) and ``grad_clip``, ``device`` (``None``: CUDA when
    available) and torch ``threads`` (``None``: torch's default)."""

    seeds: int = bounded(1, ge=1)
    seed: int = bounded(0, ge=0)
    lr: float = bounded(2e-3, gt=0)
    weight_decay: float = bounded(0.05, ge=0)
    grad_clip: float = bounded(1.0, gt=0)
    device: Optional[str] = "cpu"
    threads: Optional[int] = bounded(None, ge=1)

    def seeds_note(self, what: str) -> str:
        """The reports' sentence on seeds: ``what`` is a mean ± sample std over them."""
        return (f"{self.seeds} seed(s) per arm (seeds {self.seed} … {self.seed + self.seeds - 1})"
                f"; {what}: mean ± sample std over the seeds.")


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample std (``ddof=1``; 0 for a single value); ValueError for no values."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value, got none")
    return sum(values) / len(values), statistics.stdev(values) if len(values) > 1 else 0.0


def seed_stats(values: Sequence[float], metric: str, single_std: Optional[float] = 0.0
               ) -> Dict[str, Any]:
    """``{metric: mean, metric_std: sample std (single_std for one value), "seeds": values}``."""
    mean, std = mean_std(values)
    return {metric: mean, f"{metric}_std": std if len(values) > 1 else single_std,
            "seeds": list(values)}


def seed_summary(records: Sequence[Mapping[str, Any]], metric: str) -> Dict[str, Any]:
    """:func:`seed_stats` of one arm's per-seed records plus ``parameters``, ``seconds`` (mean),
    ``seconds_std`` and ``steps``."""
    seconds, seconds_std = mean_std([r["seconds"] for r in records])
    return {**seed_stats([r[metric] for r in records], metric),
            "parameters": records[0]["parameters"], "seconds": seconds,
            "seconds_std": seconds_std, "steps": records[0]["steps"]}


def pm(stat: Mapping[str, Any], metric: str, digits: int = 1, scale: float = 1.0) -> str:
    """A report cell: ``stat[metric]`` "± ``stat[metric_std]``" (no std for a single seed)."""
    text = f"{scale * stat[metric]:.{digits}f}"
    std = stat.get(f"{metric}_std")
    return text if std is None or len(stat["seeds"]) < 2 else f"{text} ± {scale * std:.{digits}f}"


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> List[str]:
    """The lines of a Markdown table: header, rule, one line per row."""
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(map(str, cells)) + " |"
    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


@contextlib.contextmanager
def running(settings: Any, cls: type):
    """Check that ``settings`` is a ``cls`` and use its ``threads`` torch threads meanwhile."""
    if not isinstance(settings, cls):
        raise TypeError(f"settings must be a {cls.__name__}, got {type(settings).__name__}")
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_arms(arms: Mapping[Hashable, Hashable], seeds: Sequence[int],
             train: Callable[[Any, int], Dict[str, Any]],
             on_result: Callable[[Dict[Any, List[Dict[str, Any]]]], None] = lambda r: None
             ) -> Dict[Any, List[Dict[str, Any]]]:
    """Every arm for every seed, seed by seed; arms with the same run key share one ``train(arm,
    seed)``; ``on_result`` gets the records so far (arm → one per seed) after every run."""
    done: Dict[Tuple[Any, int], Dict[str, Any]] = {}
    records: Dict[Any, List[Dict[str, Any]]] = {label: [] for label in arms}
    for seed in seeds:
        for label, key in arms.items():
            if (key, seed) not in done:
                done[key, seed] = train(label, seed)
            records[label].append(done[key, seed])
            on_result({k: v for k, v in records.items() if v})
    return records


def read_or_train(run_dir: Path, name: str, train: Callable[[], Dict[str, Any]],
                  log: Callable[[str], None], key: Any = None) -> Dict[str, Any]:
    """One arm × seed: the record in ``run_dir/result.json`` when its ``eval_key`` is ``key``
    ("done earlier"), else ``train()``'s, written there with the key; logs the arm's time."""
    path = Path(run_dir) / "result.json"
    if path.is_file():
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.pop("eval_key", None) == key:
            log(f"{name}: done earlier ({record['seconds']:.0f} s training)")
            return record
    log(f"{name} ...")
    with Stopwatch() as watch:
        record = json.loads(json.dumps(train()))           # as it will read back
        atomic_write_json(path, {**record, "eval_key": key})
    log(f"    arm time {watch.seconds:.0f} s")
    return record


def fit_with_bar(desc: str, total: int, *args: Any, callbacks: Sequence[Callable] = (),
                 **kwargs: Any) -> Dict[str, Any]:
    """:func:`translution.train.fit` with a tqdm bar of ``total`` steps (hidden off a terminal)."""
    from tqdm.auto import tqdm
    from ..train import fit
    with tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False, disable=None) as bar:
        def step(event: Dict[str, Any]) -> None:
            if event["event"] == "step":
                bar.update(1)
                bar.set_postfix(loss=f"{event['loss']:.3f}", refresh=False)
        return fit(*args, callbacks=[step, *callbacks], **kwargs)


def check_fingerprint(run_dir: Path, fingerprint: Mapping[str, Any], name: str = "run.json",
                      plan: Optional[Callable[[], Dict[str, Any]]] = None) -> Dict[str, Any]:
    """``run_dir/name``, written the first time: ``fingerprint`` (with ``plan``: ``{"fingerprint":
    ..., **plan()}``); refuses (ValueError) a folder of other settings."""
    path = Path(run_dir) / name
    plain = json.loads(json.dumps(fingerprint))
    if path.is_file():
        held = json.loads(path.read_text())
        if (held if plan is None else held.get("fingerprint")) != plain:
            raise ValueError(f"{run_dir} holds a run with other settings (model, data, budget or "
                             f"recipe differ); use another output folder or delete {run_dir}")
        return held
    held = plain if plan is None else {"fingerprint": plain, **plan()}
    atomic_write_json(path, held)
    return held


def parameter_count(section: Mapping[str, Any]) -> int:
    """Parameters of the model ``{"name": ..., **overrides}``, built on the meta device."""
    from ..recipes import build_model
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(dict(section)).parameters())


def grow_to_match(count: Callable[[int], int], target: int, start: int) -> int:
    """The ``n >= start`` whose ``count(n)`` (non-decreasing) is closest to ``target``."""
    hi = start
    while count(hi) < target:
        hi *= 2
    n = start + bisect.bisect_left(range(start, hi + 1), target, key=count)   # first count >= it
    return min({max(start, n - 1), n}, key=lambda m: (abs(count(m) - target), m))
