"""Random-number state: seeding, derived seeds, capturing and restoring every generator.

Exact resume needs every generator that training draws from to continue where it stopped:
Python's :mod:`random`, NumPy's legacy global generator, the torch CPU generator and (when
CUDA is in use) every CUDA generator. :func:`capture_rng_state` returns them in a form that
``torch.load(weights_only=True)`` accepts, and :func:`restore_rng_state` puts them back.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch

__all__ = [
    "seed_everything",
    "derive_seed",
    "capture_rng_state",
    "restore_rng_state",
    "preserved_rng",
    "seeded_rng",
]

_RNG_KEYS = ("python", "numpy", "torch", "cuda")


def seed_everything(seed: int, *, deterministic: bool = False) -> int:
    """Seed Python, NumPy and torch (CPU and every CUDA device) with one integer.

    Args:
        seed: A non-negative integer. NumPy's legacy generator takes ``seed % 2**32``.
        deterministic: Also ask torch for deterministic algorithms (``warn_only=True``) and
            turn off the cuDNN autotuner.

    Returns:
        The seed, for logging.

    Raises:
        TypeError: If ``seed`` is not an ``int``.
        ValueError: If ``seed`` is negative.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return seed


def derive_seed(*parts: int) -> int:
    """Mix several non-negative integers into one well-spread 63-bit seed.

    ``derive_seed(seed, epoch, batch_index, rank)`` gives unrelated streams for neighbouring
    arguments (unlike ``seed + epoch``), using NumPy's ``SeedSequence``.

    Args:
        *parts: Non-negative integers.

    Returns:
        An integer in ``[0, 2**63)``.

    Raises:
        ValueError: If a part is negative or not an integer.
    """
    for p in parts:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0:
            raise ValueError(f"derive_seed takes non-negative integers, got {parts!r}")
    lo, hi = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(hi) << 32 | int(lo)) & (2**63 - 1)


def capture_rng_state() -> dict[str, Any]:
    """Return the state of every global generator, serialisable with ``weights_only=True``.

    Returns:
        ``{"python": tuple, "numpy": dict, "torch": uint8 tensor, "cuda": list of uint8
        tensors (empty when CUDA is not initialised)}``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    cuda_states: list[torch.Tensor] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": cuda_states,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore generators captured by :func:`capture_rng_state`.

    CUDA states are restored only when CUDA is available and the number of devices matches;
    otherwise they are skipped (a run moved between machines cannot be bit-exact anyway).

    Args:
        state: The dictionary returned by :func:`capture_rng_state`.

    Raises:
        ValueError: If a key is missing.
    """
    missing = [k for k in _RNG_KEYS if k not in state]
    if missing:
        raise ValueError(f"RNG state is missing {missing}; expected keys {list(_RNG_KEYS)}")
    py = state["python"]
    # weights_only loading may hand back lists where tuples were saved
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    keys = npst["keys"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((npst["name"], keys.astype(np.uint32), int(npst["pos"]),
                         int(npst["has_gauss"]), float(npst["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    cuda = list(state["cuda"])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without disturbing any global generator (state is restored on exit)."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run a block with Python, NumPy and torch-CPU generators seeded from ``seed``.

    The previous CPU states are restored on exit, so a data-loading step can be made a pure
    function of its seed without affecting the training stream. CUDA generators are untouched.

    Args:
        seed: A non-negative integer.
    """
    py = random.getstate()
    npst = np.random.get_state()
    th = torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npst)
        torch.set_rng_state(th)
