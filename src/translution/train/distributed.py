"""Distributed data parallel from ``torchrun``'s ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
(NCCL on CUDA, Gloo on CPU); without them, one process and nothing initialised."""

from __future__ import annotations

import atexit
import importlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "setup_distributed", "cleanup_distributed", "wrap_model", "unwrap_model",
           "all_reduce_sums", "all_gather_objects", "barrier"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name) or str(default)
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def setup_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Initialise the process group (NCCL on CUDA, else Gloo) when launched by ``torchrun``
    (idempotent); ``device`` ``None``: ``cuda:LOCAL_RANK`` if available."""
    world, rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    local = _env_int("LOCAL_RANK", 0)
    info_device = torch.device(device if device is not None
                               else "cuda" if torch.cuda.is_available() else "cpu")
    if info_device.type == "cuda":
        if info_device.index is None:
            info_device = torch.device("cuda", local)
        torch.cuda.set_device(info_device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if info_device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": info_device} if backend == "nccl" else {}
        # DDP imports torch.distributed.nn.functional, whose functions take the default group
        # as a default argument evaluated at import time: imported after init_process_group,
        # they would keep the group (and Gloo's threads) alive past destroy_process_group
        # until interpreter exit, whose late teardown aborts the process now and then.
        importlib.import_module("torch.distributed.nn.functional")
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
        atexit.register(_destroy_at_exit)
    if _is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, info_device)


def cleanup_distributed() -> None:
    """Destroy the process group, if any, after a barrier (no rank leaves amid a collective)."""
    if _is_initialized():
        barrier()
        dist.destroy_process_group()


def _destroy_at_exit() -> None:
    """Destroy a Gloo group left at interpreter exit: torch's C++ static teardown races with its
    threads and aborts (SIGABRT, 5 of 36 exits measured). NCCL is left alone (may hang)."""
    if _is_initialized() and dist.get_backend() == "gloo":
        dist.destroy_process_group()


def _is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _is_dist() -> bool:
    return _is_initialized() and dist.get_world_size() > 1


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """``model`` (on ``info.device``) in DDP when distributed (DDP broadcasts rank 0's weights)."""
    if not _is_dist():
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip ``DistributedDataParallel`` and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Sum each value (same names on every rank) over all ranks; identity when not distributed."""
    if not _is_dist() or not values:
        return dict(values)
    names = sorted(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(names, t.cpu().tolist()))


def all_gather_objects(obj: Any) -> list[Any]:
    """Gather one picklable object from every rank (``[obj]`` when not distributed)."""
    if not _is_dist():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if _is_dist():
        dist.barrier()
