"""Deterministic, resumable batch sources for the step-based loop.

A batch source is anything with ``len(source)`` (steps per epoch) and
``source.batches(epoch, start=0)`` yielding the batches of ``epoch`` from index ``start``.
Both sources here make **every batch a pure function of (seed, epoch, batch index, rank)**:

* the sample order of an epoch comes from a generator seeded by ``(seed, epoch)``;
* loading a batch (dataset transforms, ``batch_transform`` such as MixUp/CutMix) runs with
  Python, NumPy and torch-CPU generators seeded by ``(seed, epoch, index, rank)`` and restored
  afterwards, in the main process or in a worker alike.

Hence a run resumed mid-epoch sees exactly the batches it would have seen, whatever
``num_workers`` is, without replaying (or even loading) the skipped ones, and data loading never
perturbs the training random stream (dropout etc.).

Under DDP (``torch.distributed`` initialised, or ``rank``/``world_size`` given) each rank takes
a strided shard ``perm[rank::world_size]`` of the epoch permutation, like
``DistributedSampler``. With a per-rank ``batch_size`` of ``B``, the union of batch ``i`` over
ranks is exactly batch ``i`` of a single process using ``batch_size = B * world_size``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, default_collate

from ..utils import check_int
from .rng import derive_seed, seeded_rng

__all__ = ["BatchSource", "DatasetBatches", "WindowBatches", "token_windows"]


@runtime_checkable
class BatchSource(Protocol):
    """The loop's view of training data."""

    def __len__(self) -> int:
        """Optimiser steps per epoch (on this rank; equal on every rank)."""
        ...

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Yield batches ``start, start+1, ..., len(self)-1`` of ``epoch``."""
        ...


def _resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if (rank is None) != (world_size is None):
        raise ValueError(f"give both rank and world_size or neither, got rank={rank}, "
                         f"world_size={world_size}")
    if rank is None:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if world_size < 1 or not 0 <= rank < world_size:  # type: ignore[operator]
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, "
                         f"world_size={world_size}")
    return rank, world_size  # type: ignore[return-value]


def _check_epoch_start(epoch: int, start: int, length: int) -> None:
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if not 0 <= start <= length:
        raise ValueError(f"start must be in [0, {length}], got {start}")


class _BatchFetcher(torch.utils.data.Dataset):
    """Map-style dataset whose item ``j`` is a whole batch: ``(seed, indices)`` → batch."""

    def __init__(self, dataset: Any, plan: list[tuple[int, list[int]]],
                 collate_fn: Callable, batch_transform: Callable | None) -> None:
        self.dataset, self.plan = dataset, plan
        self.collate_fn, self.batch_transform = collate_fn, batch_transform

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, j: int) -> Any:
        seed, indices = self.plan[j]
        with seeded_rng(seed):
            getitems = getattr(self.dataset, "__getitems__", None)
            samples = getitems(indices) if getitems is not None else \
                [self.dataset[i] for i in indices]
            batch = self.collate_fn(samples)
            if self.batch_transform is not None:
                batch = self.batch_transform(batch)
        return batch


def _unbatched(item: Any) -> Any:
    return item


class DatasetBatches:
    """Batches of a map-style dataset, deterministic per (seed, epoch, index, rank).

    Args:
        dataset: Supports ``len()`` and ``dataset[i]`` (or ``__getitems__``). If it has
            ``set_epoch(epoch)`` it is called at the start of every epoch's iteration.
        batch_size: Batch size on this process.
        shuffle: Shuffle with a permutation seeded by ``(seed, epoch)``.
        seed: Data seed (order and per-batch augmentation randomness).
        drop_last: Drop the tail so that every batch on every rank is full
            (``len(dataset) // (batch_size * world_size)`` steps).
        num_workers: ``DataLoader`` worker processes (0 loads in the main process).
        collate_fn: Turns a list of samples into a batch (default ``default_collate``).
        batch_transform: Applied to each collated batch under the batch's seeded generators,
            e.g. MixUp/CutMix ``(x, y) -> (x, y_soft)``.
        pin_memory: Passed to ``DataLoader``.
        even_shards: Without ``drop_last``, pad the permutation by wrapping so that every rank
            has the same number of batches (needed for training under DDP). Use ``False`` for
            evaluation to score each sample exactly once (ranks may then differ in length).
        rank: This process's rank; default from ``torch.distributed`` (0 if not initialised).
        world_size: Number of processes; given together with ``rank``.
        prefetch_factor: Passed to ``DataLoader`` when ``num_workers > 0``.
        multiprocessing_context: Passed to ``DataLoader``.

    Raises:
        ValueError: On a non-positive ``batch_size``, negative ``num_workers``, empty dataset.
    """

    def __init__(self, dataset: Any, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, num_workers: int = 0,
                 collate_fn: Callable[[list], Any] | None = None,
                 batch_transform: Callable[[Any], Any] | None = None,
                 pin_memory: bool = False, even_shards: bool = True,
                 rank: int | None = None, world_size: int | None = None,
                 prefetch_factor: int | None = None, multiprocessing_context: Any = None) -> None:
        check_int("batch_size", batch_size, 1)
        check_int("num_workers", num_workers, 0)
        if len(dataset) == 0:
            raise ValueError("dataset is empty; expected at least one sample")
        _resolve_rank(rank, world_size)
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.num_workers = num_workers
        self.collate_fn = collate_fn or default_collate
        self.batch_transform = batch_transform
        self.pin_memory, self.even_shards = pin_memory, even_shards
        self.rank, self.world_size = rank, world_size
        self.prefetch_factor = prefetch_factor
        self.multiprocessing_context = multiprocessing_context

    def _shard(self, epoch: int) -> list[int]:
        rank, world = _resolve_rank(self.rank, self.world_size)
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            perm = torch.randperm(n, generator=g).tolist()
        else:
            perm = list(range(n))
        if self.drop_last:
            perm = perm[: n // (self.batch_size * world) * self.batch_size * world]
        elif self.even_shards and n % world:
            pad = world - n % world
            perm = perm + (perm * (pad // n + 1))[:pad]
        return perm[rank::world]

    def __len__(self) -> int:
        rank, world = _resolve_rank(self.rank, self.world_size)
        n = len(self.dataset)
        if self.drop_last:
            return n // (self.batch_size * world)
        if self.even_shards:
            per_rank = -(-n // world)
        else:
            per_rank = len(range(rank, n, world))
        return -(-per_rank // self.batch_size)

    def index_batches(self, epoch: int) -> list[list[int]]:
        """Dataset indices of every batch of ``epoch`` on this rank."""
        shard = self._shard(epoch)
        b = self.batch_size
        return [shard[i:i + b] for i in range(0, len(shard), b)][: len(self)]

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Yield batches ``start..len-1`` of ``epoch``; skipped batches are never loaded."""
        length = len(self)
        _check_epoch_start(epoch, start, length)
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        rank, _ = _resolve_rank(self.rank, self.world_size)
        plan = [(derive_seed(self.seed, epoch, i, rank), idx)
                for i, idx in enumerate(self.index_batches(epoch))][start:]
        fetcher = _BatchFetcher(self.dataset, plan, self.collate_fn, self.batch_transform)
        if self.num_workers == 0 and not self.pin_memory:
            for j in range(len(fetcher)):
                yield fetcher[j]
            return
        kwargs: dict[str, Any] = {}
        if self.num_workers > 0:
            kwargs["multiprocessing_context"] = self.multiprocessing_context
            if self.prefetch_factor is not None:
                kwargs["prefetch_factor"] = self.prefetch_factor
        loader = DataLoader(fetcher, batch_size=None, shuffle=False,
                            num_workers=self.num_workers, collate_fn=_unbatched,
                            pin_memory=self.pin_memory,
                            # own generator: creating the iterator must not draw from the
                            # global torch generator (that would break exact resume)
                            generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)),
                            **kwargs)
        yield from loader


class WindowBatches:
    """Random-window batches for language modelling (or any sampler of random batches).

    Batch ``i`` of epoch ``e`` is ``sample_fn(generator, batch_size)`` with a fresh
    ``torch.Generator`` seeded by ``(seed, e, i, rank)``; "epoch" is just a block of
    ``steps_per_epoch`` batches (for per-epoch schedules, logging and evaluation).

    Args:
        sample_fn: ``(generator, batch_size) -> batch``; must draw randomness only from the
            generator. :func:`token_windows` builds one for a 1-D token array.
        batch_size: Batch size on this process.
        steps_per_epoch: Batches per epoch.
        seed: Data seed.
        rank: This process's rank (default from ``torch.distributed``); ranks draw different
            windows, so the global batch is ``batch_size * world_size`` windows.
        world_size: Given together with ``rank``.
    """

    def __init__(self, sample_fn: Callable[[torch.Generator, int], Any], batch_size: int,
                 steps_per_epoch: int, *, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None) -> None:
        if not callable(sample_fn):
            raise TypeError(f"sample_fn must be callable, got {type(sample_fn).__name__}")
        check_int("batch_size", batch_size, 1)
        check_int("steps_per_epoch", steps_per_epoch, 1)
        _resolve_rank(rank, world_size)
        self.sample_fn, self.batch_size, self.steps_per_epoch = sample_fn, batch_size, steps_per_epoch
        self.seed, self.rank, self.world_size = int(seed), rank, world_size

    def __len__(self) -> int:
        return self.steps_per_epoch

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Yield batches ``start..steps_per_epoch-1`` of ``epoch``."""
        _check_epoch_start(epoch, start, self.steps_per_epoch)
        rank, _ = _resolve_rank(self.rank, self.world_size)
        for i in range(start, self.steps_per_epoch):
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, i, rank))
            yield self.sample_fn(g, self.batch_size)


def token_windows(tokens: np.ndarray | torch.Tensor | Sequence[int], block_size: int
                  ) -> Callable[[torch.Generator, int], tuple[torch.Tensor, torch.Tensor]]:
    """A ``sample_fn`` drawing random windows from a 1-D token array (nanoGPT-style).

    Args:
        tokens: 1-D token ids (e.g. a ``np.memmap`` of ``uint16``); only the sampled windows
            are read.
        block_size: Context length ``T``.

    Returns:
        ``sample_fn(generator, batch_size) -> (x, y)`` with int64 tensors ``(B, T)``,
        ``y`` shifted by one.

    Raises:
        ValueError: If the array is not 1-D or has at most ``block_size`` tokens.
    """
    arr = tokens if isinstance(tokens, (np.ndarray, torch.Tensor)) else np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(arr.shape)}")
    if block_size < 1 or len(arr) <= block_size:
        raise ValueError(f"need 1 <= block_size < len(tokens), got block_size={block_size}, "
                         f"len(tokens)={len(arr)}")

    def sample(generator: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(arr) - block_size, (batch_size,), generator=generator)
        rows = [torch.as_tensor(np.asarray(arr[s:s + block_size + 1]).astype(np.int64))
                for s in starts.tolist()]
        w = torch.stack(rows)                                         # (B, T+1)
        return w[:, :-1], w[:, 1:]

    return sample
