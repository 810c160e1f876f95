"""Distributed data parallel through ``torchrun`` environment variables.

Launch with ``torchrun --nproc_per_node=N script.py`` (or ``python -m torch.distributed.run``);
:func:`setup_distributed` reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, initialises the
process group (NCCL on CUDA, Gloo on CPU) and pins the CUDA device. Without those variables it
describes a single process and initialises nothing.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "setup_distributed",
    "cleanup_distributed",
    "dist_info",
    "wrap_model",
    "unwrap_model",
    "all_reduce_sums",
    "all_gather_objects",
    "barrier",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly one-process) job.

    Attributes:
        rank: Global rank.
        world_size: Number of processes.
        local_rank: Rank on this machine (selects the CUDA device).
        device: The device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one process is in use."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _default_device(local_rank: int, device: str | torch.device | None) -> torch.device:
    if device is not None:
        d = torch.device(device)
        if d.type == "cuda" and d.index is None:
            d = torch.device("cuda", local_rank)
        return d
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def dist_info(device: str | torch.device | None = None) -> DistInfo:
    """Describe this process from the initialised process group or the environment."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local = _env_int("LOCAL_RANK", 0)
    return DistInfo(rank, world, local, _default_device(local, device))


def setup_distributed(backend: str | None = None,
                      device: str | torch.device | None = None) -> DistInfo:
    """Initialise the process group when launched by ``torchrun`` (idempotent).

    Args:
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (NCCL when the device is CUDA, else Gloo).
        device: Device override; ``None`` uses ``cuda:LOCAL_RANK`` when CUDA is available.

    Returns:
        The :class:`DistInfo` of this process.

    Raises:
        ValueError: If the environment variables are inconsistent.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    info_device = _default_device(local, device)
    if info_device.type == "cuda":
        torch.cuda.set_device(info_device)
    if world > 1 and not dist.is_initialized():
        if backend is None:
            backend = "nccl" if info_device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {}
        if backend == "nccl":
            kwargs["device_id"] = info_device
        # DDP imports torch.distributed.nn.functional, whose functions take the default group
        # as a default argument evaluated at import time: imported after init_process_group,
        # they would keep the group (and Gloo's threads) alive past destroy_process_group
        # until interpreter exit, whose late teardown aborts the process now and then.
        import torch.distributed.nn.functional  # noqa: F401
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
        atexit.register(_destroy_at_exit)
    return dist_info(info_device)


def cleanup_distributed() -> None:
    """Wait for every rank, then destroy the process group (if one was initialised).

    Call it on every rank at the end of a successful run: the barrier keeps a rank from
    closing its connections while another is still inside a collective. A process that
    exits without calling it still tears the group down (see :func:`setup_distributed`).
    """
    if dist.is_available() and dist.is_initialized():
        barrier()
        dist.destroy_process_group()


def _destroy_at_exit() -> None:
    """Destroy a Gloo process group left at interpreter exit (no barrier: peers may be gone).

    A Gloo group still alive when the interpreter finalises is destroyed during the C++
    static teardown, which races with its own threads and aborts the process (SIGABRT,
    "terminate called without an active exception"; 5 of 36 such exits measured). NCCL
    groups are left to torch: destroying one while a peer is inside a collective can hang.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        dist.destroy_process_group()


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def wrap_model(model: nn.Module, info: DistInfo, **ddp_kwargs: Any) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when running distributed.

    The model must already be on ``info.device``. DDP broadcasts rank 0's parameters and
    buffers, so every rank starts from the same weights.
    """
    if not (info.distributed and _is_dist()):
        return model
    if info.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [info.device.index])
    return nn.parallel.DistributedDataParallel(model, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip ``DistributedDataParallel`` and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def all_reduce_sums(values: dict[str, float], device: torch.device | None = None
                    ) -> dict[str, float]:
    """Sum each value over all ranks (identity when not distributed).

    Args:
        values: Name → number; every rank must pass the same names.
        device: Device of the reduction tensor (CUDA for NCCL); default: CPU for Gloo,
            the current CUDA device for NCCL.
    """
    if not _is_dist() or not values:
        return dict(values)
    names = sorted(values)
    if device is None:
        device = (torch.device("cuda", torch.cuda.current_device())
                  if dist.get_backend() == "nccl" else torch.device("cpu"))
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
