"""Tasks: what a batch means, how its loss is computed and how a model is evaluated.

The loop only talks to a :class:`Task`; models and data stay generic. Two tasks cover the
paper's experiments:

* :class:`ClassificationTask`: ``batch = (inputs, targets)``, ``model(inputs) -> (B, C)``
  logits, cross-entropy with hard ``(B,)`` or soft ``(B, C)`` targets (MixUp/CutMix);
  evaluation reports ``loss``, ``top1`` and ``top5`` (percent) and ``samples``.
* :class:`LanguageModelTask`: ``batch = tokens (B, T+1)`` or ``(inputs (B, T), targets (B, T))``,
  ``model(inputs) -> (B, T, V)`` logits, next-token cross-entropy; evaluation reports ``loss``,
  ``ppl = exp(loss)`` and ``tokens``.

Evaluation accumulates sums and counts, calls ``reduce`` on them (the loop passes an all-reduce
under DDP) and only then divides, so distributed metrics equal single-process ones.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import topk_correct

__all__ = ["Task", "ClassificationTask", "LanguageModelTask"]

Reduce = Callable[[dict[str, float]], dict[str, float]]


def _identity(values: dict[str, float]) -> dict[str, float]:
    return values


@runtime_checkable
class Task(Protocol):
    """What the loop needs from a task.

    Attributes:
        default_best: ``(metric, mode)`` used for ``best.pt`` when the config names none.
        metric_modes: Direction of each evaluation metric (``"min"`` or ``"max"``).
    """

    default_best: tuple[str, str]
    metric_modes: dict[str, str]

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Return the scalar training loss and extra values to log (floats or 0-d tensors,
        averaged over the logging window)."""
        ...

    def evaluate(self, model: nn.Module, batches: Iterable[Any],
                 reduce: Reduce | None = None) -> dict[str, float]:
        """Evaluate ``model`` on ``batches`` (the task switches to eval mode and no-grad itself,
        restoring the previous mode) and return metrics, reducing sums with ``reduce`` first."""
        ...


def _pair(batch: Any, what: str) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, dict) and {"input", "target"} <= set(batch):
        return batch["input"], batch["target"]
    raise TypeError(f"{what} batch must be (inputs, targets) or a dict with 'input' and "
                    f"'target', got {type(batch).__name__}"
                    + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))


class _EvalMode:
    """Put a model in eval mode and no-grad for a block, restoring its mode afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.model.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


class ClassificationTask:
    """Image (or any) classification with cross-entropy.

    Args:
        label_smoothing: Passed to ``F.cross_entropy`` for training.
        topk: Accuracies to report in evaluation (``top{k}``, percent). A ``k`` larger than
            the number of classes counts every sample.
    """

    default_best = ("top1", "max")

    def __init__(self, label_smoothing: float = 0.0, topk: tuple[int, ...] = (1, 5)) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not topk or any(int(k) < 1 for k in topk):
            raise ValueError(f"topk must be positive integers, got {topk!r}")
        self.label_smoothing = float(label_smoothing)
        self.topk = tuple(int(k) for k in topk)
        self.metric_modes = {"loss": "min", **{f"top{k}": "max" for k in self.topk}}

    @staticmethod
    def _logits(model: nn.Module, inputs: Any) -> torch.Tensor:
        logits = model(inputs)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise ValueError(f"classification model must return (B, C) logits, got {shape}")
        return logits

    @staticmethod
    def _check_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
        ok = (targets.shape == logits.shape[:1] and not targets.is_floating_point()) or \
             (targets.shape == logits.shape and targets.is_floating_point())
        if not ok:
            raise ValueError(f"targets must be integer (B,) = {tuple(logits.shape[:1])} or "
                             f"float (B, C) = {tuple(logits.shape)}, got {targets.dtype} "
                             f"{tuple(targets.shape)}")

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Cross-entropy of ``model(inputs)`` against hard or soft targets.

        Args:
            model: Maps inputs to ``(B, C)`` logits.
            batch: ``(inputs, targets)`` with targets ``(B,)`` int64 or ``(B, C)`` float.

        Returns:
            ``(loss, {})``.
        """
        inputs, targets = _pair(batch, "classification")
        logits = self._logits(model, inputs)                          # (B, C)
        self._check_targets(logits, targets)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)
        return loss, {}

    def evaluate(self, model: nn.Module, batches: Iterable[Any],
                 reduce: Reduce | None = None) -> dict[str, float]:
        """Mean loss (no label smoothing) and top-k accuracy in percent over all batches.

        Returns:
            ``{"loss", "top1", "top5", ..., "samples"}``.

        Raises:
            ValueError: If there are no samples (on every rank together).
        """
        sums = {"loss_sum": 0.0, "samples": 0.0, **{f"hits{k}": 0.0 for k in self.topk}}
        with _EvalMode(model):
            for batch in batches:
                inputs, targets = _pair(batch, "classification")
                logits = self._logits(model, inputs).float()          # (B, C)
                self._check_targets(logits, targets)
                sums["loss_sum"] += float(F.cross_entropy(logits, targets, reduction="sum"))
                sums["samples"] += logits.shape[0]
                for k, hits in topk_correct(logits, targets, self.topk).items():
                    sums[f"hits{k}"] += hits
        sums = (reduce or _identity)(sums)
        n = sums["samples"]
        if n <= 0:
            raise ValueError("evaluation saw no samples; expected at least one batch")
        out = {"loss": sums["loss_sum"] / n}
        out.update({f"top{k}": 100.0 * sums[f"hits{k}"] / n for k in self.topk})
        out["samples"] = int(n)
        return out


class LanguageModelTask:
    """Next-token prediction with cross-entropy.

    Args:
        ignore_index: Target value that is not scored (padding).
    """

    default_best = ("loss", "min")

    def __init__(self, ignore_index: int = -100) -> None:
        self.ignore_index = int(ignore_index)
        self.metric_modes = {"loss": "min", "ppl": "min"}

    @staticmethod
    def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, torch.Tensor):
            if batch.ndim != 2 or batch.shape[1] < 2:
                raise ValueError(f"token batch must be (B, T+1) with T >= 1, got "
                                 f"{tuple(batch.shape)}")
            return batch[:, :-1], batch[:, 1:]                        # (B, T), (B, T)
        x, y = _pair(batch, "language-model")
        if x.shape != y.shape or x.ndim != 2:
            raise ValueError(f"inputs and targets must both be (B, T), got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        return x, y

    @staticmethod
    def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or \
                logits.shape[:2] != x.shape:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise ValueError(f"language model must return (B, T, V) logits with (B, T) = "
                             f"{tuple(x.shape)}, got {shape}")
        return logits

    def _ce(self, logits: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten().long(),
                               ignore_index=self.ignore_index, reduction=reduction)

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Mean next-token cross-entropy.

        Args:
            model: Maps ``(B, T)`` token ids to ``(B, T, V)`` logits.
            batch: ``(B, T+1)`` tokens, or ``(inputs, targets)`` both ``(B, T)``.

        Returns:
            ``(loss, {})``.
        """
        x, y = self._split(batch)
        return self._ce(self._logits(model, x), y, "mean"), {}

    def evaluate(self, model: nn.Module, batches: Iterable[Any],
                 reduce: Reduce | None = None) -> dict[str, float]:
        """Token-weighted mean loss and perplexity over all batches.

        Returns:
            ``{"loss", "ppl", "tokens"}``.

        Raises:
            ValueError: If no token was scored.
        """
        sums = {"loss_sum": 0.0, "tokens": 0.0}
        with _EvalMode(model):
            for batch in batches:
                x, y = self._split(batch)
                sums["loss_sum"] += float(self._ce(self._logits(model, x), y, "sum"))
                sums["tokens"] += float((y != self.ignore_index).sum())
        sums = (reduce or _identity)(sums)
        n = sums["tokens"]
        if n <= 0:
            raise ValueError("evaluation scored no tokens; expected at least one batch")
        loss = sums["loss_sum"] / n
        ppl = math.exp(loss) if loss < 700 else math.inf
        return {"loss": loss, "ppl": ppl, "tokens": int(n)}
