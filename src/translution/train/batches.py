"""Resumable batch sources (``len(source)`` steps per epoch, ``source.batches(epoch, start=0)``):
batch ``i`` of epoch ``e`` on ``rank`` is a pure function of ``(seed, e, i, rank)``."""

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


class _SeededSource:
    """What both batch sources share: batch size, data seed, rank and the ``batches`` checks."""

    def __init__(self, batch_size: int, seed: int, rank: int | None,
                 world_size: int | None) -> None:
        self.batch_size = check_int("batch_size", batch_size, 1)
        if (rank is None) != (world_size is None):
            raise ValueError(f"give both rank and world_size or neither, got rank={rank}, "
                             f"world_size={world_size}")
        if rank is not None and (world_size < 1 or not 0 <= rank < world_size):  # type: ignore
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        self.seed, self.rank, self.world_size = int(seed), rank, world_size

    def _rank_world(self) -> tuple[int, int]:
        """``(rank, world_size)``: as given, else from ``torch.distributed`` (``(0, 1)``)."""
        if self.rank is not None:
            return self.rank, self.world_size  # type: ignore[return-value]
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _checked_rank(self, epoch: int, start: int) -> int:
        """This rank, after checking ``epoch`` and ``start`` of :meth:`batches`."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if not 0 <= start <= len(self):  # type: ignore[arg-type]
            raise ValueError(f"start must be in [0, {len(self)}], got {start}")  # type: ignore
        return self._rank_world()[0]


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
            batch = self.collate_fn([self.dataset[i] for i in indices])
            return batch if self.batch_transform is None else self.batch_transform(batch)


def _unbatched(item: Any) -> Any:
    return item


class DatasetBatches(_SeededSource):
    """Batches (``batch_size`` per process, rank ``r`` of the epoch's order ``perm[r::world]``) of
    a map-style dataset; without ``drop_last``, ``even_shards`` pads by wrapping so all ranks have
    as many batches (``False``: each sample once). ``batch_transform``: e.g. MixUp, seeded."""

    def __init__(self, dataset: Any, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, num_workers: int = 0,
                 collate_fn: Callable[[list], Any] | None = None,
                 batch_transform: Callable[[Any], Any] | None = None,
                 pin_memory: bool = False, even_shards: bool = True,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__(batch_size, seed, rank, world_size)
        self.num_workers = check_int("num_workers", num_workers, 0)
        if len(dataset) == 0:
            raise ValueError("dataset is empty; expected at least one sample")
        self.dataset, self.shuffle = dataset, shuffle
        self.drop_last, self.pin_memory, self.even_shards = drop_last, pin_memory, even_shards
        self.collate_fn, self.batch_transform = collate_fn or default_collate, batch_transform

    def __len__(self) -> int:
        rank, world = self._rank_world()
        n = len(self.dataset)
        if self.drop_last:
            return n // (self.batch_size * world)
        per_rank = -(-n // world) if self.even_shards else len(range(rank, n, world))
        return -(-per_rank // self.batch_size)

    def index_batches(self, epoch: int) -> list[list[int]]:
        """Dataset indices of every batch of ``epoch`` on this rank."""
        rank, world = self._rank_world()
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
        rank = self._checked_rank(epoch, start)
        if callable(getattr(self.dataset, "set_epoch", None)):
            self.dataset.set_epoch(epoch)
        plan = [(derive_seed(self.seed, epoch, i, rank), idx)
                for i, idx in enumerate(self.index_batches(epoch))][start:]
        fetcher = _BatchFetcher(self.dataset, plan, self.collate_fn, self.batch_transform)
        # own generator: creating the iterator must not draw from the global torch generator
        # (that would break exact resume)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        yield from DataLoader(fetcher, batch_size=None, num_workers=self.num_workers,
                              collate_fn=_unbatched, pin_memory=self.pin_memory,
                              generator=generator)


class WindowBatches(_SeededSource):
    """Random batches: ``sample_fn(generator, batch_size)`` drawing only from a generator seeded
    by ``(seed, epoch, i, rank)`` (see :func:`token_windows`); an epoch is ``steps_per_epoch``."""

    def __init__(self, sample_fn: Callable[[torch.Generator, int], Any], batch_size: int,
                 steps_per_epoch: int, *, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None) -> None:
        if not callable(sample_fn):
            raise TypeError(f"sample_fn must be callable, got {type(sample_fn).__name__}")
        super().__init__(batch_size, seed, rank, world_size)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, 1)
        self.sample_fn = sample_fn

    def __len__(self) -> int:
        return self.steps_per_epoch

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """Yield batches ``start .. steps_per_epoch - 1`` of ``epoch``."""
        rank = self._checked_rank(epoch, start)
        for i in range(start, self.steps_per_epoch):
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, i, rank))
            yield self.sample_fn(g, self.batch_size)


def token_windows(tokens: np.ndarray | torch.Tensor | Sequence[int], block_size: int
                  ) -> Callable[[torch.Generator, int], tuple[torch.Tensor, torch.Tensor]]:
    """A ``sample_fn`` of random windows of a 1-D token array (only the sampled windows of e.g.
    a ``np.memmap`` are read): ``(x, y)``, int64 ``(B, T)``, ``y`` shifted by one."""
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
