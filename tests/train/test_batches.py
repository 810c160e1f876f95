"""Batch sources: deterministic per (seed, epoch, index, rank), resumable, DDP-sharded."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from translution.train import DatasetBatches, WindowBatches, token_windows

from .helpers import NoisyDataset, mixup, token_array


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))


def test_epoch_is_a_permutation_and_seeded():
    ds = TensorDataset(torch.arange(23))
    src = DatasetBatches(ds, 5, seed=3)
    assert len(src) == 5
    e0 = torch.cat([b[0] for b in src.batches(0)])
    assert sorted(e0.tolist()) == list(range(23))
    assert torch.equal(e0, torch.cat([b[0] for b in DatasetBatches(ds, 5, seed=3).batches(0)]))
    assert not torch.equal(e0, torch.cat([b[0] for b in src.batches(1)]))
    assert not torch.equal(e0, torch.cat([b[0] for b in DatasetBatches(ds, 5, seed=4).batches(0)]))
    ordered = DatasetBatches(ds, 5, shuffle=False)
    assert torch.cat([b[0] for b in ordered.batches(0)]).tolist() == list(range(23))
    dropped = DatasetBatches(ds, 5, drop_last=True)
    assert len(dropped) == 4 and all(len(b[0]) == 5 for b in dropped.batches(0))


def test_start_mid_epoch_skips_without_loading():
    ds = NoisyDataset(40)
    src = DatasetBatches(ds, 4, seed=1, batch_transform=mixup)
    full = list(src.batches(2))
    ds.calls = 0
    tail = list(src.batches(2, start=6))
    assert ds.calls == 4 * 4                     # only the 4 remaining batches were loaded
    assert all(_equal(a, b) for a, b in zip(full[6:], tail)) and len(tail) == 4
    assert ds.epochs[-1] == 2                     # set_epoch was called
    assert list(src.batches(2, start=10)) == []
    with pytest.raises(ValueError, match=r"start must be in \[0, 10\]"):
        list(src.batches(0, start=11))


def test_loading_does_not_touch_global_rng():
    src = DatasetBatches(NoisyDataset(16), 4, batch_transform=mixup)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    list(src.batches(0))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


def test_workers_give_identical_batches():
    ds = NoisyDataset(24)
    a = list(DatasetBatches(ds, 4, seed=5, batch_transform=mixup).batches(1, start=2))
    b = list(DatasetBatches(ds, 4, seed=5, batch_transform=mixup, num_workers=2).batches(1, 2))
    assert len(a) == len(b) == 4 and all(_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("n, drop_last", [(24, False), (25, False), (27, True)])
def test_rank_shards_union_is_the_global_batch(n, drop_last):
    ds = TensorDataset(torch.arange(n))
    single = DatasetBatches(ds, 6, seed=2, drop_last=drop_last, rank=0, world_size=1)
    shards = [DatasetBatches(ds, 3, seed=2, drop_last=drop_last, rank=r, world_size=2)
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(single)
    batches = single.index_batches(0)
    for i, glob in enumerate(batches):
        union = shards[0].index_batches(0)[i] + shards[1].index_batches(0)[i]
        if n == 25 and i == len(batches) - 1:
            # padded by wrapping (like DistributedSampler): one sample repeats
            assert set(glob) <= set(union) and len(union) == len(glob) + 1
        else:
            assert sorted(union) == sorted(glob)
    sizes = [sum(len(b) for b in s.index_batches(0)) for s in shards]
    assert sizes[0] == sizes[1]


def test_uneven_eval_shards_cover_each_sample_once():
    ds = TensorDataset(torch.arange(25))
    shards = [DatasetBatches(ds, 4, shuffle=False, even_shards=False, rank=r, world_size=2)
              for r in range(2)]
    seen = [int(v) for s in shards for b in s.batches(0) for v in b[0]]
    assert sorted(seen) == list(range(25))
    assert [len(s) for s in shards] == [4, 3]


def test_argument_errors():
    ds = TensorDataset(torch.arange(4))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        DatasetBatches(ds, 0)
    with pytest.raises(TypeError, match="batch_size must be an int, got True"):
        DatasetBatches(ds, True)
    with pytest.raises(ValueError, match="empty"):
        DatasetBatches(TensorDataset(torch.arange(0)), 2)
    with pytest.raises(ValueError, match="both rank and world_size"):
        DatasetBatches(ds, 2, rank=1)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        DatasetBatches(ds, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        WindowBatches(lambda g, b: None, 2, 0)


def test_window_batches_and_token_windows():
    tokens = token_array(200)
    sample = token_windows(tokens, 8)
    src = WindowBatches(sample, 3, 5, seed=7)
    full = list(src.batches(1))
    assert len(src) == 5 and len(full) == 5
    x, y = full[0]
    assert x.shape == y.shape == (3, 8) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert all(_equal(a, b) for a, b in zip(full[2:], src.batches(1, start=2)))
    assert not _equal(full[0], next(iter(src.batches(0))))
    other_rank = WindowBatches(sample, 3, 5, seed=7, rank=1, world_size=2)
    assert not _equal(full[0], next(iter(other_rank.batches(1))))
    with pytest.raises(ValueError, match="block_size"):
        token_windows(tokens[:5], 8)
    with pytest.raises(ValueError, match="1-D"):
        token_windows(np.zeros((2, 20)), 4)
