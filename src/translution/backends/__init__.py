"""Backends that compute the pair primitives (see :mod:`translution.backends.base`).

``backend=None`` picks the first backend of :data:`DEFAULT_ORDER` that supports the inputs:
``batched`` on every device (few kernel launches on GPUs; on CPUs up to 1.4× faster than
``grouped`` on small grids and within 7 % elsewhere, see ``benchmarks/README.md``), then
``grouped``, then ``reference``. A forced backend (a name or a :class:`Backend` instance) that
cannot run raises a ``ValueError`` listing every reason.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Union

import torch

from ..layouts import Layout
from .base import Backend
from .batched import BatchedBackend
from .grouped import GroupedBackend
from .reference import ReferenceBackend

__all__ = ["Backend", "BatchedBackend", "GroupedBackend", "ReferenceBackend", "BACKENDS",
           "DEFAULT_ORDER", "check_backend", "select_backend"]

BACKENDS: Dict[str, Backend] = {"batched": BatchedBackend(), "grouped": GroupedBackend(),
                                "reference": ReferenceBackend()}
#: Backend names in the order ``backend=None`` tries them.
DEFAULT_ORDER = ("batched", "grouped", "reference")


def check_backend(backend: Union[None, str, Backend]) -> Optional[Backend]:
    """The backend ``backend`` names (``None`` stays ``None``: chosen per call); a
    ``ValueError`` for an unknown name, a ``TypeError`` for anything else."""
    if backend is None or isinstance(backend, Backend):
        return backend
    if not isinstance(backend, str):
        raise TypeError(f"backend must be None, a name or a Backend, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[backend]


def select_backend(backend: Union[None, str, Backend], layout: Layout, x: torch.Tensor,
                   weights: List[Optional[torch.Tensor]]) -> Backend:
    """Resolve ``backend`` (``None``, a name from :data:`BACKENDS`, or an instance)."""
    if backend is None:
        reasons = {}
        for name in DEFAULT_ORDER:
            why = BACKENDS[name].not_supported_reasons(layout, x, weights)
            if not why:
                return BACKENDS[name]
            reasons[name] = why
        raise ValueError("no backend can run these inputs: " + "; ".join(
            f"{name}: {', '.join(why)}" for name, why in reasons.items()))
    backend = check_backend(backend)
    why = backend.not_supported_reasons(layout, x, weights)
    if why:
        raise ValueError(f"backend {backend.name!r} cannot run these inputs: " + "; ".join(why))
    return backend
