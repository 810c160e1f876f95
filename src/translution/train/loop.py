"""The training loop shared by classification and language modelling.

:func:`fit` is step-based: the global step ``s`` belongs to epoch ``s // steps_per_epoch`` and
is batch ``s % steps_per_epoch`` of that epoch, so a run can stop and resume anywhere,
mid-epoch included. Everything that decides the next step (weights, optimiser state, learning
rate, random generators, the batch itself, even the logging accumulators) is either
checkpointed or a pure function of the step, so on CPU a resumed run reproduces the per-step
losses of an uninterrupted one bit for bit.

Files written to ``out_dir`` (rank 0 only)::

    config.yaml     resolved RunConfig
    metrics.jsonl   one JSON object per training-log / evaluation event
    last.pt         latest checkpoint (atomic)
    best.pt         checkpoint with the best evaluation metric so far
    metrics_*.csv   when train.csv is true
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .batches import BatchSource
from .checkpoint import (load_checkpoint, remove_run_temporaries, resume_checkpoint,
                         save_checkpoint)
from .config import RunConfig, save_config
from .distributed import (DistInfo, all_gather_objects, all_reduce_sums, barrier,
                          setup_distributed, unwrap_model, wrap_model)
from .metrics import MetricsLogger
from .optim import build_optimizer
from .rng import capture_rng_state, preserved_rng, seed_everything
from .schedule import LRSchedule
from .tasks import Task

__all__ = ["fit", "to_device", "count_parameters"]

log = logging.getLogger("translution.train")

Callback = Callable[[dict[str, Any]], None]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside nested tuples/lists/dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(b, device) for b in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters of the unwrapped model."""
    return sum(p.numel() for p in unwrap_model(model).parameters()
               if p.requires_grad or not trainable_only)


class _Window:
    """Sums of training values over the current logging window (kept on device)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.count = 0
        self.t0 = time.perf_counter()

    def add(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1

    def floats(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.sums.items()}

    def state(self) -> dict[str, Any]:
        return {"sums": self.floats(), "count": self.count}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        # float32 -> Python float -> float32 is exact, so the window sums continue bit for bit
        self.sums = {k: torch.tensor(v, dtype=torch.float32, device=device)
                     for k, v in state.get("sums", {}).items()}
        self.count = int(state.get("count", 0))


def _eval_iter(batches: Any) -> Iterable[Any]:
    if hasattr(batches, "batches") and callable(batches.batches):
        return batches.batches(0)
    return batches


def _resolve_best(task: Task, metric: str | None, mode: str) -> tuple[str, str]:
    if metric is None:
        default_metric, default_mode = task.default_best
        return default_metric, default_mode if mode == "auto" else mode
    if mode != "auto":
        return metric, mode
    modes = getattr(task, "metric_modes", {})
    if metric not in modes:
        raise ValueError(f"train.best_mode='auto' cannot tell whether {metric!r} should be "
                         f"minimised or maximised; known metrics {modes}; set train.best_mode "
                         f"to 'min' or 'max'")
    return metric, modes[metric]


def _improved(value: float, best: dict | None, mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best["value"] if mode == "min" else value > best["value"]


def _restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
             schedule: LRSchedule, rank: int, optim_name: str) -> dict[str, Any]:
    """Load a checkpoint into the live objects, keeping the optimiser settings of the new config
    (and saying which changed); refuse a checkpoint of another optimiser."""
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    fresh_base = list(schedule.base_lrs)
    obj = load_checkpoint(path, model, optimizer, schedule, rank=rank, restore_rng=True)
    saved = ((obj.get("config") or {}).get("optim") or {}).get("name")
    if saved not in (None, optim_name) or any(
            set(g) - {"params"} != set(f) for g, f in zip(optimizer.param_groups, fresh)):
        raise ValueError(f"{path} was trained with optimiser {saved or 'another'!r}; this run "
                         f"asks for {optim_name!r}. Resuming with another optimiser is not "
                         f"supported: set optim.name={saved} or start afresh (--restart, "
                         f"resume=False or another output folder)")
    changes = {}
    if schedule.base_lrs != fresh_base:
        changes["lr"] = (schedule.base_lrs[0], fresh_base[0])
        schedule.base_lrs = fresh_base
    for group, new in zip(optimizer.param_groups, fresh):
        for key, value in new.items():
            if key != "lr" and group.get(key) != value:
                if key != "initial_lr":
                    changes.setdefault(key, (group.get(key), value))
                group[key] = value
    if changes:
        log.warning("resuming %s with the new optimiser settings: %s", path, ", ".join(
            f"optim.{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
    return obj


def fit(model: nn.Module, task: Task, train_batches: BatchSource, config: RunConfig,
        eval_batches: Any = None, *, out_dir: str | os.PathLike | None = None,
        resume: bool | str | os.PathLike = True, callbacks: Sequence[Callback] = (),
        device: str | torch.device | None = None,
        stop_after_steps: int | None = None, tokenizer: dict | None = None) -> dict[str, Any]:
    """Train ``model`` on ``task`` for ``config.train.max_steps`` steps or ``epochs`` epochs.

    Args:
        model: The model, built (and seeded) by the caller. It is moved to the device; under
            DDP it is wrapped in ``DistributedDataParallel`` internally (the object passed in
            stays unwrapped and holds the trained weights afterwards).
        task: A :class:`~translution.train.tasks.Task` (loss and evaluation).
        train_batches: A :class:`~translution.train.batches.BatchSource` (``len`` = steps per
            epoch, ``batches(epoch, start)``).
        config: The resolved run configuration (its ``train``, ``optim`` and ``schedule``
            sections drive the loop; ``model``/``data`` are only recorded).
        eval_batches: A batch source (its epoch 0 is used) or any re-iterable of batches;
            ``None`` disables evaluation.
        out_dir: Output directory; ``None`` uses ``config.train.out_dir``; if both are ``None``
            nothing is written (and nothing can be resumed).
        resume: ``True`` resumes from ``out_dir/last.pt`` when it exists, a path resumes from
            that file, ``False`` starts afresh (overwriting ``metrics.jsonl``).
        callbacks: Functions called with event dicts: ``{"event": "step", "step", "epoch",
            "loss", "lr"}`` after every optimiser step (this costs one device sync per step),
            every ``"train"``/``"eval"`` record as logged, and ``{"event": "checkpoint",
            "kind": "last"|"best", "path", "step"}``. An exception raised by a callback stops
            training (the last checkpoint stays valid).
        device: Device override (else ``config.train.device``, else CUDA when available).
        stop_after_steps: Stop after this many optimiser steps *in this call*, writing
            ``last.pt`` (pre-emption, time budgets, tests).
        tokenizer: Tokenizer meta stored in every checkpoint (language models), so that
            ``translution generate`` needs no data folder.

    Returns:
        Summary dict: ``steps``, ``total_steps``, ``epochs`` (fractional), ``seconds``
        (training time, summed over resumes), ``parameters``, ``train`` (last training
        record), ``eval`` (last evaluation metrics or ``None``), ``best``, ``stopped_early``,
        ``resumed_from_step``, ``out_dir``, ``world_size``.

    Raises:
        TypeError: If ``config`` is not a RunConfig or ``train_batches`` is not a batch source.
        ValueError: If the batch source is empty, a checkpoint is invalid, or the best metric
            is unknown.
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    if not (hasattr(train_batches, "batches") and hasattr(train_batches, "__len__")):
        raise TypeError(f"train_batches must have __len__ and batches(epoch, start), got "
                        f"{type(train_batches).__name__}")
    if stop_after_steps is not None and stop_after_steps < 1:
        raise ValueError(f"stop_after_steps must be >= 1 or None, got {stop_after_steps}")
    tc = config.train
    info: DistInfo = setup_distributed(device=device if device is not None else tc.device)
    dev = info.device
    seed_everything(tc.seed + info.rank, deterministic=tc.deterministic)

    steps_per_epoch = len(train_batches)
    if steps_per_epoch < 1:
        raise ValueError(f"train_batches yields {steps_per_epoch} batches per epoch; expected "
                         f">= 1 (dataset smaller than one batch with drop_last?)")
    total_steps = tc.max_steps if tc.max_steps is not None else tc.epochs * steps_per_epoch
    out = Path(out_dir) if out_dir is not None else (Path(tc.out_dir) if tc.out_dir else None)
    writer = info.is_main and out is not None
    if out is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(tc, out_dir=str(out)))
    best_metric, best_mode = _resolve_best(task, tc.best_metric, tc.best_mode)

    raw = model.to(dev)
    optimizer = build_optimizer(raw, config.optim)
    schedule = LRSchedule(optimizer, config.schedule, steps_per_epoch, total_steps)
    fwd: nn.Module = torch.compile(raw) if tc.compile else raw
    train_model = wrap_model(fwd, info)
    n_params = count_parameters(raw)
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) \
        if tc.precision == "bf16" else contextlib.nullcontext
    reduce = all_reduce_sums if info.distributed else None

    # ---- resume -------------------------------------------------------------------------
    step, best, base_elapsed, last_eval, last_eval_step = 0, None, 0.0, None, -1
    window = _Window()
    if writer:
        remove_run_temporaries(out)  # type: ignore[arg-type]
    explicit = resume if isinstance(resume, (str, os.PathLike)) else None
    found = resume_checkpoint(out if resume else None, explicit,
                              lambda p: _restore(p, raw, optimizer, schedule, info.rank,
                                                 config.optim.name))
    resumed_from = None
    if found is not None:
        ckpt_path, obj = found
        step, best = int(obj["step"]), obj["best"]
        extra = obj["extra"] or {}
        base_elapsed = float(extra.get("elapsed", 0.0))
        last_eval, last_eval_step = extra.get("last_eval"), int(extra.get("last_eval_step", -1))
        window.load(extra.get("window", {}), dev)
        saved_spe = extra.get("steps_per_epoch")
        if saved_spe is not None and saved_spe != steps_per_epoch:
            warnings.warn(f"{ckpt_path}: saved with {saved_spe} steps per epoch, now "
                          f"{steps_per_epoch}; epochs will not line up with the first run",
                          stacklevel=2)
        if best is not None and best.get("metric") != best_metric:
            best = None  # a different metric now decides best.pt
        resumed_from = step
        log.info("resumed from %s at step %d", ckpt_path, step)

    logger = MetricsLogger(out, enabled=writer, csv=tc.csv)
    if writer:
        out.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        save_config(config, out / "config.yaml")  # type: ignore[operator]
        if resumed_from is None:
            logger.reset()
        else:
            logger.truncate_after(step)

    t0 = time.perf_counter()

    def elapsed() -> float:
        return base_elapsed + time.perf_counter() - t0

    def emit(event: dict[str, Any]) -> None:
        for cb in callbacks:
            cb(event)

    def checkpoint(kind: str) -> None:
        rng = all_gather_objects(capture_rng_state())  # collective: every rank calls it
        if writer:
            path = out / f"{kind}.pt"  # type: ignore[operator]
            save_checkpoint(path, model=raw, optimizer=optimizer, scheduler=schedule,
                            keep_previous=kind == "last",
                            step=step, epoch=step // steps_per_epoch, rng=rng,
                            config=config.to_dict(), best=best, tokenizer=tokenizer,
                            extra={"steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                                   "elapsed": elapsed(), "window": window.state(),
                                   "last_eval": last_eval, "last_eval_step": last_eval_step,
                                   "world_size": info.world_size})
            emit({"event": "checkpoint", "kind": kind, "path": str(path), "step": step})
        barrier()

    def evaluate() -> dict[str, float]:
        nonlocal best, last_eval, last_eval_step
        # evaluation must not disturb the training random stream (exact resume)
        with preserved_rng(), autocast():
            metrics = task.evaluate(fwd, (to_device(b, dev) for b in _eval_iter(eval_batches)),
                                    reduce)
        last_eval, last_eval_step = dict(metrics), step
        record = logger.log({"event": "eval", "step": step,
                             "epoch": round(step / steps_per_epoch, 6),
                             "time": round(elapsed(), 3), **metrics})
        log.info("eval step %d: %s", step, metrics)
        emit(record)
        if best_metric not in metrics:
            raise ValueError(f"best metric {best_metric!r} is not among the evaluation "
                             f"metrics {sorted(metrics)}; set train.best_metric")
        if _improved(metrics[best_metric], best, best_mode):
            best = {"metric": best_metric, "mode": best_mode,
                    "value": float(metrics[best_metric]), "step": step}
            if tc.save_best and out is not None:
                checkpoint("best")
        return metrics

    last_train: dict[str, Any] | None = None

    def log_train(lr: float) -> None:
        nonlocal last_train, window
        sums = window.floats()
        count = window.count
        if count == 0:
            return
        if info.distributed:
            sums = {k: v / info.world_size for k, v in all_reduce_sums(sums).items()}
        dt = (time.perf_counter() - window.t0) / count
        means = {k: v / count for k, v in sums.items()}
        last_train = logger.log({"event": "train", "step": step,
                                 "epoch": round(step / steps_per_epoch, 6), "lr": lr, **means,
                                 "step_time": round(dt, 6), "time": round(elapsed(), 3)})
        emit(last_train)
        pbar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}", lr=f"{lr:.3g}")
        window = _Window()

    show = tc.progress and info.is_main and sys.stderr.isatty()
    pbar = tqdm(total=total_steps, initial=step, disable=not show, dynamic_ncols=True,
                desc="train")
    run_steps, stopped = 0, False
    clip = config.optim.grad_clip
    try:
        while step < total_steps and not stopped:
            epoch, offset = divmod(step, steps_per_epoch)
            it: Iterator[Any] = iter(train_batches.batches(epoch, offset))
            got_any = False
            try:
                for batch in it:
                    got_any = True
                    lr = schedule.update(step)[0]
                    train_model.train()
                    batch = to_device(batch, dev)
                    with autocast():
                        loss, extras = task.loss(train_model, batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    values = {"loss": loss.detach(), **extras}
                    if clip:
                        values["grad_norm"] = torch.nn.utils.clip_grad_norm_(raw.parameters(),
                                                                             clip)
                    optimizer.step()
                    step += 1
                    run_steps += 1
                    window.add(values)
                    pbar.update(1)
                    if callbacks:
                        emit({"event": "step", "step": step,
                              "epoch": round(step / steps_per_epoch, 6),
                              "loss": float(loss.detach()), "lr": lr})
                    final = step >= total_steps
                    epoch_done = step % steps_per_epoch == 0
                    n_epochs = step // steps_per_epoch
                    stopped = stop_after_steps is not None and run_steps >= stop_after_steps
                    # no extra record when stopping early: the logging window is checkpointed
                    # and a resumed run logs exactly what an uninterrupted one would
                    if step % tc.log_every == 0 or final:
                        log_train(lr)
                    if eval_batches is not None and (
                            final or (tc.eval_every and step % tc.eval_every == 0)
                            or (epoch_done and tc.eval_every_epochs
                                and n_epochs % tc.eval_every_epochs == 0)):
                        evaluate()
                    if out is not None and (
                            final or stopped
                            or (tc.checkpoint_every and step % tc.checkpoint_every == 0)
                            or (epoch_done and tc.checkpoint_every_epochs
                                and n_epochs % tc.checkpoint_every_epochs == 0)):
                        checkpoint("last")
                    if final or stopped or epoch_done:
                        break
            finally:
                close = getattr(it, "close", None)
                if callable(close):
                    close()
            if not got_any:
                raise ValueError(f"train_batches.batches({epoch}, start={offset}) yielded no "
                                 f"batch although len(train_batches) = {steps_per_epoch}")
        if eval_batches is not None and not stopped and last_eval_step != step:
            evaluate()  # e.g. resumed from a finished run that never evaluated at the end
    finally:
        pbar.close()
        logger.flush_csv()

    return {
        "steps": step,
        "total_steps": total_steps,
        "epochs": step / steps_per_epoch,
        "seconds": elapsed(),
        "parameters": n_params,
        "train": last_train,
        "eval": last_eval,
        "best": best,
        "stopped_early": stopped and step < total_steps,
        "resumed_from_step": resumed_from,
        "out_dir": None if out is None else str(out),
        "world_size": info.world_size,
    }
