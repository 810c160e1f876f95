"""Random-number state for exact resume: seeding, derived seeds, capturing and restoring Python's,
NumPy's legacy, torch's CPU and (when initialised) every CUDA generator."""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch

from ..utils import check_int

__all__ = ["seed_everything", "derive_seed", "capture_rng_state", "restore_rng_state",
           "preserved_rng", "seeded_rng"]

_RNG_KEYS = ("python", "numpy", "torch", "cuda")


def _seed_cpu(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.default_generator.manual_seed(seed)


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) with ``seed`` (an int >= 0);
    ``deterministic`` also asks torch for deterministic algorithms (warn only)."""
    seed = check_int("seed", seed, 0)
    _seed_cpu(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def derive_seed(*parts: int) -> int:
    """One well-spread seed in ``[0, 2**63)`` from non-negative integers (NumPy's
    ``SeedSequence``): ``derive_seed(seed, epoch, batch, rank)``, unlike ``seed + epoch``."""
    for p in parts:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0:
            raise ValueError(f"derive_seed takes non-negative integers, got {parts!r}")
    lo, hi = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(hi) << 32 | int(lo)) & (2**63 - 1)


def capture_rng_state(cuda: bool = True) -> dict[str, Any]:
    """Every global generator's state, loadable with ``weights_only=True``: ``{"python",
    "numpy", "torch", "cuda"}`` (``cuda``: empty unless CUDA is initialised and asked for)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    cuda_states = torch.cuda.get_rng_state_all() if cuda and torch.cuda.is_initialized() else []
    return {"python": random.getstate(),
            "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state(), "cuda": cuda_states}


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore a :func:`capture_rng_state`; CUDA states only when the device count matches
    (a run moved between machines cannot be bit-exact anyway)."""
    missing = [k for k in _RNG_KEYS if k not in state]
    if missing:
        raise ValueError(f"RNG state is missing {missing}; expected keys {list(_RNG_KEYS)}")
    py = state["python"]
    # weights_only loading may hand back lists where tuples were saved
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    keys = np.asarray(npst["keys"]).astype(np.uint32)          # a tensor once saved
    np.random.set_state((npst["name"], keys, int(npst["pos"]), int(npst["has_gauss"]),
                         float(npst["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    cuda = list(state["cuda"])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


@contextlib.contextmanager
def preserved_rng(cuda: bool = True) -> Iterator[None]:
    """Run a block without disturbing any global generator (``cuda=False``: CPU ones only)."""
    state = capture_rng_state(cuda)
    try:
        yield
    finally:
        restore_rng_state(state)


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run a block with the CPU generators (Python, NumPy, torch) seeded from ``seed``, then
    restored: a data-loading step as a pure function of its seed."""
    with preserved_rng(cuda=False):
        _seed_cpu(seed)
        yield
