"""Tasks: what a batch means, its loss, and how a model is evaluated (sums reduced over ranks,
then divided, so distributed metrics equal one process's)."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import topk_correct

__all__ = ["Task", "ClassificationTask", "LanguageModelTask"]

Reduce = Callable[[dict[str, float]], dict[str, float]]


@runtime_checkable
class Task(Protocol):
    """What the loop needs from a task."""

    default_best: tuple[str, str]              # (metric, mode) deciding best.pt by default
    metric_modes: dict[str, str]               # "min" or "max" for each evaluation metric

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """The scalar training loss and extra values to log (averaged over the log window)."""
        ...

    def evaluate(self, model: nn.Module, batches: Iterable[Any],
                 reduce: Reduce | None = None) -> dict[str, float]:
        """Metrics of ``model`` (in eval mode, no grad) on ``batches``, sums reduced first."""
        ...


def _pair(batch: Any, what: str) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(f"{what} batch must be (inputs, targets), got {type(batch).__name__}"
                    + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad, restoring the model's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _shape(x: Any) -> Any:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)


def _reduced(sums: dict[str, float], reduce: Reduce | None, count: str, what: str
             ) -> tuple[dict[str, float], float]:
    """``(sums reduced over ranks, sums[count])``; ValueError when the count is 0."""
    sums = reduce(sums) if reduce else sums
    if sums[count] <= 0:
        raise ValueError(f"evaluation {what}; expected at least one batch")
    return sums, sums[count]


class ClassificationTask:
    """Cross-entropy (``label_smoothing`` in training) of ``(B, C)`` logits against hard ``(B,)``
    or soft ``(B, C)`` targets; reports ``top{k}`` accuracies in percent for each ``k``."""

    default_best = ("top1", "max")

    def __init__(self, label_smoothing: float = 0.0, topk: tuple[int, ...] = (1, 5)) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not topk or any(int(k) < 1 for k in topk):
            raise ValueError(f"topk must be positive integers, got {topk!r}")
        self.label_smoothing, self.topk = float(label_smoothing), tuple(int(k) for k in topk)
        self.metric_modes = {"loss": "min", **{f"top{k}": "max" for k in self.topk}}

    @staticmethod
    def _forward(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, C) float32, targets (B,) int or (B, C) float)``."""
        inputs, targets = _pair(batch, "classification")
        logits = model(inputs)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ValueError(f"classification model must return (B, C) logits, got "
                             f"{_shape(logits)}")
        if not ((targets.shape == logits.shape[:1] and not targets.is_floating_point()) or
                (targets.shape == logits.shape and targets.is_floating_point())):
            raise ValueError(f"targets must be integer (B,) = {tuple(logits.shape[:1])} or "
                             f"float (B, C) = {tuple(logits.shape)}, got {targets.dtype} "
                             f"{tuple(targets.shape)}")
        return logits.float(), targets

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(cross-entropy, {})`` of ``model(inputs)`` against hard or soft targets."""
        logits, targets = self._forward(model, batch)
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing), {}

    def evaluate(self, model: nn.Module, batches: Iterable[Any],
                 reduce: Reduce | None = None) -> dict[str, float]:
        """``{"loss" (no label smoothing), "top1", "top5", ..., "samples"}``."""
        sums = {"loss_sum": 0.0, "samples": 0.0, **{f"hits{k}": 0.0 for k in self.topk}}
        with _eval_mode(model):
            for batch in batches:
                logits, targets = self._forward(model, batch)         # (B, C)
                sums["loss_sum"] += float(F.cross_entropy(logits, targets, reduction="sum"))
                sums["samples"] += logits.shape[0]
                for k, hits in topk_correct(logits, targets, self.topk).items():
                    sums[f"hits{k}"] += hits
        sums, n = _reduced(sums, reduce, "samples", "saw no samples")
        return {"loss": sums["loss_sum"] / n,
                **{f"top{k}": 100.0 * sums[f"hits{k}"] / n for k in self.topk},
                "samples": int(n)}


class LanguageModelTask:
    """Next-token cross-entropy of ``(B, T, V)`` logits of tokens ``(B, T+1)`` or ``(inputs,
    targets)`` ``(B, T)``; targets equal to ``ignore_index`` (padding) are not scored."""

    default_best = ("loss", "min")

    def __init__(self, ignore_index: int = -100) -> None:
        self.ignore_index = int(ignore_index)
        self.metric_modes = {"loss": "min", "ppl": "min"}

    def _losses(self, model: nn.Module, batch: Any, reduction: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cross-entropy with reduction, targets (B, T))``."""
        if isinstance(batch, torch.Tensor):
            if batch.ndim != 2 or batch.shape[1] < 2:
                raise ValueError(f"token batch must be (B, T+1) with T >= 1, got "
                                 f"{tuple(batch.shape)}")
            x, y = batch[:, :-1], batch[:, 1:]                        # (B, T), (B, T)
        else:
            x, y = _pair(batch, "language-model")
            if x.shape != y.shape or x.ndim != 2:
                raise ValueError(f"inputs and targets must both be (B, T), got "
                                 f"{tuple(x.shape)} and {tuple(y.shape)}")
        logits = model(x)                                             # (B, T, V)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or \
                logits.shape[:2] != x.shape:
            raise ValueError(f"language model must return (B, T, V) logits with (B, T) = "
                             f"{tuple(x.shape)}, got {_shape(logits)}")
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten().long(),
                               ignore_index=self.ignore_index, reduction=reduction)
        return loss, y

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(mean next-token cross-entropy, {})``."""
        return self._losses(model, batch, "mean")[0], {}

    def evaluate(self, model: nn.Module, batches: Iterable[Any],
                 reduce: Reduce | None = None) -> dict[str, float]:
        """``{"loss" (per token), "ppl", "tokens"}``."""
        sums = {"loss_sum": 0.0, "tokens": 0.0}
        with _eval_mode(model):
            for batch in batches:
                loss, y = self._losses(model, batch, "sum")
                sums["loss_sum"] += float(loss)
                sums["tokens"] += float((y != self.ignore_index).sum())
        sums, n = _reduced(sums, reduce, "tokens", "scored no tokens")
        loss = sums["loss_sum"] / n
        return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else math.inf, "tokens": int(n)}
