"""The training loop (:func:`fit` runs a :class:`Trainer`): step ``s`` is batch
``s % steps_per_epoch`` of epoch ``s // steps_per_epoch`` and all else that decides the next step
is checkpointed, so on CPU a resumed run is bit-exact."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..utils import Stopwatch
from .batches import BatchSource
from .checkpoint import (load_checkpoint, remove_run_temporaries, resume_checkpoint,
                         save_checkpoint)
from .config import RunConfig, save_config
from .distributed import (DistInfo, all_gather_objects, all_reduce_sums, barrier,
                          setup_distributed, unwrap_model, wrap_model)
from .metrics import MetricsLogger
from .optim import LRSchedule, build_optimizer
from .rng import capture_rng_state, preserved_rng, seed_everything
from .tasks import Task

__all__ = ["Trainer", "fit", "to_device", "count_parameters"]

log = logging.getLogger("translution.train")

Callback = Callable[[dict[str, Any]], None]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside nested tuples/lists/dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of the unwrapped model."""
    return sum(p.numel() for p in unwrap_model(model).parameters())


def _resolve_best(task: Task, metric: str | None, mode: str) -> tuple[str, str]:
    """The metric deciding ``best.pt`` and its direction (``"auto"``: from the task)."""
    default, default_mode = task.default_best
    modes = {**getattr(task, "metric_modes", {}), default: default_mode}
    metric = metric or default
    if mode == "auto" and metric not in modes:
        raise ValueError(f"train.best_mode='auto' cannot tell whether {metric!r} should be "
                         f"minimised or maximised; known metrics {modes}; set train.best_mode "
                         f"to 'min' or 'max'")
    return metric, modes[metric] if mode == "auto" else mode


def _restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
             schedule: LRSchedule, rank: int, optim_name: str) -> dict[str, Any]:
    """Load a checkpoint into the live objects, keeping (and logging) the new config's optimiser
    settings; a checkpoint of another optimiser is refused."""
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    obj = load_checkpoint(path, model, optimizer, schedule, rank=rank, restore_rng=True)
    saved = ((obj.get("config") or {}).get("optim") or {}).get("name")
    if saved not in (None, optim_name) or any(
            set(g) - {"params"} != set(f) for g, f in zip(optimizer.param_groups, fresh)):
        raise ValueError(f"{path} was trained with optimiser {saved or 'another'!r}; this run "
                         f"asks for {optim_name!r}. Resuming with another optimiser is not "
                         f"supported: set optim.name={saved} or start afresh (--restart, "
                         f"resume=False or another output folder)")
    changes: dict[str, tuple[Any, Any]] = {}
    for group, new in zip(optimizer.param_groups, fresh):
        for key, value in new.items():        # lr: set by the schedule before the next step
            if key != "lr" and group[key] != value:
                changes.setdefault("lr" if key == "initial_lr" else key, (group[key], value))
        group.update(new)
    schedule.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    if changes:
        log.warning("resuming %s with the new optimiser settings: %s", path, ", ".join(
            f"optim.{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
    return obj


class Trainer:
    """One training run (the arguments of :func:`fit`); :meth:`run` trains, returns a summary."""

    def __init__(self, model: nn.Module, task: Task, train_batches: BatchSource,
                 config: RunConfig, eval_batches: Any = None, *,
                 eval_sets: Mapping[str, Any] | None = None,
                 out_dir: str | os.PathLike | None = None, resume: bool | str | os.PathLike = True,
                 callbacks: Sequence[Callback] = (), device: str | torch.device | None = None,
                 stop_after_steps: int | None = None, tokenizer: dict | None = None) -> None:
        if eval_batches is not None and eval_sets is not None:
            raise ValueError("give eval_batches (one set) or eval_sets (named sets), not both")
        if not isinstance(config, RunConfig):
            raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
        if not isinstance(train_batches, BatchSource):
            raise TypeError(f"train_batches must have __len__ and batches(epoch, start), got "
                            f"{type(train_batches).__name__}")
        if stop_after_steps is not None and stop_after_steps < 1:
            raise ValueError(f"stop_after_steps must be >= 1 or None, got {stop_after_steps}")
        tc = self.tc = config.train
        self.info: DistInfo = setup_distributed(device if device is not None else tc.device)
        seed_everything(tc.seed + self.info.rank, deterministic=tc.deterministic)
        self.task, self.train_batches = task, train_batches
        self.eval_sets: dict[str | None, Any] = dict(eval_sets) if eval_sets is not None else \
            ({} if eval_batches is None else {None: eval_batches})
        self.steps_per_epoch = len(train_batches)
        if self.steps_per_epoch < 1:
            raise ValueError(f"train_batches yields {self.steps_per_epoch} batches per epoch; "
                             f"expected >= 1 (dataset smaller than one batch with drop_last?)")
        self.total_steps = tc.max_steps or tc.epochs * self.steps_per_epoch
        self.out = Path(out_dir) if out_dir is not None else \
            (Path(tc.out_dir) if tc.out_dir else None)
        self.writer = self.info.rank == 0 and self.out is not None   # rank 0 writes every file
        if self.out is not None:
            config = dataclasses.replace(config,
                                         train=dataclasses.replace(tc, out_dir=str(self.out)))
        self.config, self.resume, self.callbacks = config, resume, callbacks
        self.stop_after_steps, self.tokenizer = stop_after_steps, tokenizer
        self.best_metric, self.best_mode = _resolve_best(task, tc.best_metric, tc.best_mode)
        dev = self.info.device
        self.raw = model.to(dev)
        self.optimizer = build_optimizer(self.raw, config.optim)
        self.schedule = LRSchedule(self.optimizer, config.schedule, self.steps_per_epoch,
                                   self.total_steps)
        self.fwd: nn.Module = torch.compile(self.raw) if tc.compile else self.raw
        self.train_model = wrap_model(self.fwd, self.info)
        bf16 = tc.precision == "bf16"
        self.autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)
        self.step, self.run_steps, self.best, self.resumed_from = 0, 0, None, None
        self.last_evals: dict[str | None, dict] = {}
        self.last_eval_step, self.last_train = -1, None
        self.stopped = self.budget_spent = False
        self.base_elapsed, self.wall, self.paused = 0.0, Stopwatch(), Stopwatch()
        # the logging window: sums of the training values (on the device), steps, start
        self.window_sums: dict[str, torch.Tensor | float] = {}
        self.window_steps, self.window_start = 0, 0.0

    def elapsed(self) -> float:
        """Training seconds so far (summed over resumes; evaluation and checkpoints excluded)."""
        return self.base_elapsed + self.wall.seconds - self.paused.seconds

    def check_budget(self) -> bool:
        """Note (in ``budget_spent``) and return whether ``train.time_budget_s`` is spent."""
        budget = self.tc.time_budget_s
        self.budget_spent = budget is not None and self.elapsed() >= budget
        return self.budget_spent

    def emit(self, event: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb(event)

    def _window_floats(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.window_sums.items()}

    def _epoch(self) -> float:
        return round(self.step / self.steps_per_epoch, 6)

    def _resume(self) -> None:
        if self.writer:
            remove_run_temporaries(self.out)  # type: ignore[arg-type]
        found = resume_checkpoint(self.out, self.resume, lambda p: _restore(
            p, self.raw, self.optimizer, self.schedule, self.info.rank, self.config.optim.name))
        if found is None:
            return
        path, obj = found
        self.step, self.best, extra = int(obj["step"]), obj["best"], obj["extra"] or {}
        self.base_elapsed = float(extra.get("elapsed", 0.0))
        self.last_evals = {k: v for k, v in extra.get("last_evals", {}).items() if v is not None}
        self.last_eval_step = int(extra.get("last_eval_step", -1))
        window = extra.get("window", {})   # float32 -> float -> float32: continues bit for bit
        self.window_sums = {k: torch.tensor(v, dtype=torch.float32, device=self.info.device)
                            for k, v in window.get("sums", {}).items()}
        self.window_steps = int(window.get("count", 0))
        if extra.get("steps_per_epoch", self.steps_per_epoch) != self.steps_per_epoch:
            warnings.warn(f"{path}: saved with {extra['steps_per_epoch']} steps per epoch, now "
                          f"{self.steps_per_epoch}; epochs will not line up with the first run",
                          stacklevel=3)
        if self.best is not None and self.best.get("metric") != self.best_metric:
            self.best = None  # a different metric now decides best.pt
        self.resumed_from = self.step
        log.info("resumed from %s at step %d", path, self.step)

    def _open_outputs(self) -> None:
        self.logger = MetricsLogger(self.out if self.writer else None, csv=self.tc.csv)
        if self.writer:
            self.out.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            save_config(self.config, self.out / "config.yaml")  # type: ignore[operator]
            if self.resumed_from is None:
                self.logger.reset()
            else:
                self.logger.truncate_after(self.step)
        show = self.tc.progress and self.info.rank == 0 and sys.stderr.isatty()
        self.pbar = tqdm(total=self.total_steps, initial=self.step, disable=not show,
                         dynamic_ncols=True, desc="train")

    def checkpoint(self, kind: str) -> None:
        """Write ``last.pt`` or ``best.pt`` (a collective under DDP: every rank calls it)."""
        with self.paused:
            rng = all_gather_objects(capture_rng_state())
            if self.writer:
                path = self.out / f"{kind}.pt"  # type: ignore[operator]
                extra = {"steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                         "elapsed": self.elapsed(), "last_eval_step": self.last_eval_step,
                         "window": {"sums": self._window_floats(), "count": self.window_steps},
                         "last_evals": self.last_evals, "world_size": self.info.world_size}
                save_checkpoint(path, model=self.raw, optimizer=self.optimizer,
                                scheduler=self.schedule, keep_previous=kind == "last",
                                step=self.step, epoch=self.step // self.steps_per_epoch,
                                rng=rng, config=self.config.to_dict(), best=self.best,
                                extra=extra, tokenizer=self.tokenizer)
                self.emit({"event": "checkpoint", "kind": kind, "path": str(path),
                           "step": self.step})
            barrier()

    def evaluate(self) -> dict[str | None, dict[str, float]]:
        """Evaluate every set, log one record per set, and keep ``best.pt`` (first set)."""
        with self.paused:
            for name, batches in self.eval_sets.items():
                if callable(getattr(batches, "batches", None)):
                    batches = batches.batches(0)
                # evaluation must not disturb the training random stream (exact resume)
                with preserved_rng(), self.autocast():
                    metrics = self.task.evaluate(
                        self.fwd, (to_device(b, self.info.device) for b in batches),
                        all_reduce_sums)
                self.last_evals[name] = dict(metrics)
                named = {} if name is None else {"set": name}
                record = self.logger.log({"event": "eval", **named, "step": self.step,
                                          "epoch": self._epoch(),
                                          "time": round(self.elapsed(), 3), **metrics})
                log.info("eval %s step %d: %s", name or "", self.step, metrics)
                self.emit(record)
        self.last_eval_step = self.step
        metrics = next(iter(self.last_evals.values()))
        if self.best_metric not in metrics:
            raise ValueError(f"best metric {self.best_metric!r} is not among the evaluation "
                             f"metrics {sorted(metrics)}; set train.best_metric")
        value = metrics[self.best_metric]
        if value is not None and not math.isnan(value) and (self.best is None or (
                value < self.best["value"] if self.best_mode == "min" else
                value > self.best["value"])):
            self.best = {"metric": self.best_metric, "mode": self.best_mode,
                         "value": float(value), "step": self.step}
            if self.tc.save_best and self.out is not None:
                self.checkpoint("best")
        return self.last_evals

    def log_train(self, lr: float) -> None:
        """Write the mean of the training values over the logging window."""
        sums, count = self._window_floats(), self.window_steps
        if count == 0:
            return
        means = {k: v / self.info.world_size / count for k, v in all_reduce_sums(sums).items()}
        dt = max(self.elapsed() - self.window_start, 0.0) / count
        self.last_train = self.logger.log({
            "event": "train", "step": self.step, "epoch": self._epoch(), "lr": lr, **means,
            "step_time": round(dt, 6), "time": round(self.elapsed(), 3)})
        self.emit(self.last_train)
        self.pbar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}", lr=f"{lr:.3g}")
        self.window_sums, self.window_steps, self.window_start = {}, 0, self.elapsed()

    def train_step(self, batch: Any) -> float:
        """One optimiser step on ``batch``; returns the learning rate used."""
        lr = self.schedule.update(self.step)[0]
        self.train_model.train()
        with self.autocast():
            loss, extras = self.task.loss(self.train_model, to_device(batch, self.info.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        values = {"loss": loss.detach(), **extras}
        if self.config.optim.grad_clip:
            values["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.raw.parameters(),
                                                                 self.config.optim.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.run_steps += 1
        for k, v in values.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            self.window_sums[k] = self.window_sums[k] + v if k in self.window_sums else v
        self.window_steps += 1
        self.pbar.update(1)
        if self.callbacks:
            self.emit({"event": "step", "step": self.step, "epoch": self._epoch(),
                       "loss": float(loss.detach()), "lr": lr})
        return lr

    def _due(self, every: int, every_epochs: int) -> bool:
        """Whether the step ends a period of ``every`` steps or ``every_epochs`` epochs (0: off)."""
        epochs, rest = divmod(self.step, self.steps_per_epoch)
        return bool(every and self.step % every == 0 or
                    rest == 0 and every_epochs and epochs % every_epochs == 0)

    def after_step(self, lr: float) -> bool:
        """Log, evaluate and checkpoint as configured; ``True`` ends the current epoch pass."""
        tc = self.tc
        final = self.check_budget() or self.step >= self.total_steps
        self.stopped = self.stop_after_steps is not None and self.run_steps >= self.stop_after_steps
        # no extra record when stopping early: the logging window is checkpointed and a
        # resumed run logs exactly what an uninterrupted one would
        if final or self._due(tc.log_every, 0):
            self.log_train(lr)
        if self.eval_sets and (final or self._due(tc.eval_every, tc.eval_every_epochs)):
            self.evaluate()
        if self.out is not None and (final or self.stopped or self._due(
                tc.checkpoint_every, tc.checkpoint_every_epochs)):
            self.checkpoint("last")
        return final or self.stopped or self.step % self.steps_per_epoch == 0

    def train_epoch(self) -> None:
        """Train from the current step to the end of its epoch (or until the run stops)."""
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        it = iter(self.train_batches.batches(epoch, offset))
        try:
            for batch in it:
                if self.after_step(self.train_step(batch)):
                    break
        finally:
            if callable(getattr(it, "close", None)):
                it.close()
        if self.step == epoch * self.steps_per_epoch + offset:
            raise ValueError(f"train_batches.batches({epoch}, start={offset}) yielded no batch "
                             f"although len(train_batches) = {self.steps_per_epoch}")

    def run(self) -> dict[str, Any]:
        """Resume if asked, train to the end (steps or time budget), return :meth:`summary`."""
        self._resume()
        self._open_outputs()
        self.check_budget()
        self.window_start = self.elapsed()
        try:
            with self.wall:
                if self.tc.eval_at_start and self.eval_sets and self.step == 0:
                    self.evaluate()
                while not (self.step >= self.total_steps or self.stopped or self.budget_spent):
                    self.train_epoch()
                if self.eval_sets and not self.stopped and self.last_eval_step != self.step:
                    self.evaluate()  # e.g. resumed from a finished run never evaluated at the end
        finally:
            self.pbar.close()
            self.logger.flush_csv()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The run so far: ``train`` is the last record, ``eval`` the first set's last metrics."""
        return {
            "steps": self.step, "total_steps": self.total_steps,
            "epochs": self.step / self.steps_per_epoch, "seconds": self.elapsed(),
            "parameters": count_parameters(self.raw), "train": self.last_train,
            "eval": next(iter(self.last_evals.values()), None), "evals": dict(self.last_evals),
            "best": self.best, "stopped_early": self.stopped and self.step < self.total_steps,
            "budget_spent": self.budget_spent, "resumed_from_step": self.resumed_from,
            "out_dir": None if self.out is None else str(self.out),
            "world_size": self.info.world_size,
        }


def fit(model: nn.Module, task: Task, train_batches: BatchSource, config: RunConfig,
        eval_batches: Any = None, **options: Any) -> dict[str, Any]:
    """Train ``model`` on ``task`` for ``config.train``'s steps, epochs or seconds; returns the
    summary. ``options`` (see :class:`Trainer`): ``eval_sets`` (named sets, the first decides
    ``best.pt``), ``out_dir``, ``resume`` (``True``: ``out_dir/last.pt``, ``prev.pt`` if damaged;
    a path; ``False``), ``callbacks`` (events), ``device``, ``stop_after_steps``, ``tokenizer``."""
    return Trainer(model, task, train_batches, config, eval_batches, **options).run()
