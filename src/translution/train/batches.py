"""Deterministic, resumable batch sources for the step-based loop.

A batch source has ``len(source)`` (steps per epoch) and ``source.batches(epoch, start=0)``
(the batches of ``epoch`` from index ``start``). Here every batch is a pure function of
``(seed, epoch, batch index, rank)``: the epoch's sample order comes from a generator seeded by
``(seed, epoch)``, and loading a batch (dataset transforms, ``batch_transform`` such as
MixUp/CutMix) runs under Python, NumPy and torch generators seeded by ``(seed, epoch, index,
rank)`` and restored afterwards, in the main process or a worker alike. A resumed run sees
exactly the batches it would have seen, whatever ``num_workers``, without loading the skipped
ones, and loading never perturbs the training random stream.

Under DDP each rank takes the shard ``perm[rank::world_size]`` of the epoch permutation (like
``DistributedSampler``), so batch ``i`` of all ranks together is batch ``i`` of one process with
``batch_size * world_size``.
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
        """Optimiser steps per epoch (equal on every rank)."""
        ...

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Yield batches ``start, ..., len(self) - 1`` of ``epoch``."""
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
    """Map-style dataset whose item ``j`` is a whole batch, loaded under its own seed."""

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
            batch = self.collate_fn(getitems(indices) if getitems is not None
                                    else [self.dataset[i] for i in indices])
            return batch if self.batch_transform is None else self.batch_transform(batch)


def _unbatched(item: Any) -> Any:
    return item


class DatasetBatches:
    """Batches of a map-style dataset, deterministic per (seed, epoch, index, rank).

    Args:
        dataset: ``len()`` and ``dataset[i]`` (or ``__getitems__``); its ``set_epoch(epoch)``,
            if any, is called at the start of every epoch.
        batch_size: Per process.
        shuffle: Permute each epoch by a generator seeded with ``(seed, epoch)``.
        seed: Data seed (order and per-batch randomness).
        drop_last: Drop the tail so that every batch on every rank is full.
        num_workers, pin_memory: Of the ``DataLoader`` (0 workers: load in this process).
        collate_fn: Samples → batch (default ``default_collate``).
        batch_transform: Applied to each collated batch under its seeded generators.
        even_shards: Without ``drop_last``, pad the permutation by wrapping so that all ranks
            have as many batches (training under DDP); ``False`` scores each sample once
            (evaluation).
        rank, world_size: Both or neither (default from ``torch.distributed``).

    Raises:
        ValueError: A non-positive ``batch_size``, negative ``num_workers``, an empty dataset.
    """

    def __init__(self, dataset: Any, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, num_workers: int = 0,
                 collate_fn: Callable[[list], Any] | None = None,
                 batch_transform: Callable[[Any], Any] | None = None,
                 pin_memory: bool = False, even_shards: bool = True,
                 rank: int | None = None, world_size: int | None = None) -> None:
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        if len(dataset) == 0:
            raise ValueError("dataset is empty; expected at least one sample")
        _resolve_rank(rank, world_size)
        self.dataset, self.shuffle, self.seed = dataset, shuffle, int(seed)
        self.drop_last, self.pin_memory, self.even_shards = drop_last, pin_memory, even_shards
        self.collate_fn, self.batch_transform = collate_fn or default_collate, batch_transform
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        rank, world = _resolve_rank(self.rank, self.world_size)
        n = len(self.dataset)
        if self.drop_last:
            return n // (self.batch_size * world)
        per_rank = -(-n // world) if self.even_shards else len(range(rank, n, world))
        return -(-per_rank // self.batch_size)

    def index_batches(self, epoch: int) -> list[list[int]]:
        """Dataset indices of every batch of ``epoch`` on this rank."""
        rank, world = _resolve_rank(self.rank, self.world_size)
        n, b = len(self.dataset), self.batch_size
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            perm = torch.randperm(n, generator=g).tolist()
        else:
            perm = list(range(n))
        if self.drop_last:
            perm = perm[: n // (b * world) * b * world]
        elif self.even_shards and n % world:
            pad = world - n % world
            perm = perm + (perm * (pad // n + 1))[:pad]
        shard = perm[rank::world]
        return [shard[i:i + b] for i in range(0, len(shard), b)][: len(self)]

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Yield batches ``start .. len - 1`` of ``epoch``; skipped batches are never loaded."""
        _check_epoch_start(epoch, start, len(self))
        if callable(getattr(self.dataset, "set_epoch", None)):
            self.dataset.set_epoch(epoch)
        rank, _ = _resolve_rank(self.rank, self.world_size)
        plan = [(derive_seed(self.seed, epoch, i, rank), idx)
                for i, idx in enumerate(self.index_batches(epoch))][start:]
        fetcher = _BatchFetcher(self.dataset, plan, self.collate_fn, self.batch_transform)
        if self.num_workers == 0 and not self.pin_memory:
            yield from (fetcher[j] for j in range(len(fetcher)))
            return
        # own generator: creating the iterator must not draw from the global torch generator
        # (that would break exact resume)
        yield from DataLoader(fetcher, batch_size=None, shuffle=False,
                              num_workers=self.num_workers, collate_fn=_unbatched,
                              pin_memory=self.pin_memory,
                              generator=torch.Generator().manual_seed(derive_seed(self.seed,
                                                                                  epoch)))


class WindowBatches:
    """Random batches (e.g. language-model windows): batch ``i`` of epoch ``e`` is
    ``sample_fn(generator, batch_size)`` with a generator seeded by ``(seed, e, i, rank)``; an
    "epoch" is just ``steps_per_epoch`` batches (for schedules, logging and evaluation).

    Args:
        sample_fn: ``(generator, batch_size) -> batch``, drawing only from the generator
            (:func:`token_windows` makes one).
        batch_size: Per process (ranks draw different windows).
        steps_per_epoch: Batches per epoch.
        seed: Data seed.
        rank, world_size: Both or neither (default from ``torch.distributed``).
    """

    def __init__(self, sample_fn: Callable[[torch.Generator, int], Any], batch_size: int,
                 steps_per_epoch: int, *, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None) -> None:
        if not callable(sample_fn):
            raise TypeError(f"sample_fn must be callable, got {type(sample_fn).__name__}")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, 1)
        _resolve_rank(rank, world_size)
        self.sample_fn, self.seed = sample_fn, int(seed)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.steps_per_epoch

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Yield batches ``start .. steps_per_epoch - 1`` of ``epoch``."""
        _check_epoch_start(epoch, start, self.steps_per_epoch)
        rank, _ = _resolve_rank(self.rank, self.world_size)
        for i in range(start, self.steps_per_epoch):
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, i, rank))
            yield self.sample_fn(g, self.batch_size)


def token_windows(tokens: np.ndarray | torch.Tensor | Sequence[int], block_size: int
                  ) -> Callable[[torch.Generator, int], tuple[torch.Tensor, torch.Tensor]]:
    """A ``sample_fn`` of random windows of a 1-D token array (nanoGPT-style; only the sampled
    windows of e.g. a ``np.memmap`` are read): ``(x, y)``, int64 ``(B, T)``, ``y`` shifted by 1.

    Raises:
        ValueError: The array is not 1-D or has at most ``block_size`` tokens.
    """
    arr = tokens if isinstance(tokens, (np.ndarray, torch.Tensor)) else np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(arr.shape)}")
    if block_size < 1 or len(arr) <= block_size:
        raise ValueError(f"need 1 <= block_size < len(tokens), got block_size={block_size}, "
                         f"len(tokens)={len(arr)}")

    def sample(generator: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(arr) - block_size, (batch_size,), generator=generator)
        w = torch.stack([torch.as_tensor(np.asarray(arr[s:s + block_size + 1]).astype(np.int64))
                         for s in starts.tolist()])                   # (B, T+1)
        return w[:, :-1], w[:, 1:]

    return sample
