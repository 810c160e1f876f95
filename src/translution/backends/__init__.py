"""Backends that compute the pair primitives (see :mod:`translution.backends.base`).

``backend=None`` picks the first backend of :func:`default_order` that supports the inputs:
``batched`` on GPUs and other accelerators (few kernel launches), and on CPUs ``batched`` for
narrow banks (α-Translution's ``R×R`` banks, small models) and ``grouped`` for wide ones (measured
side by side: ``benchmarks/README.md``). A forced backend (a name or a :class:`Backend` instance)
that cannot run raises a ``ValueError`` listing every reason.
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
           "default_order", "select_backend"]

BACKENDS: Dict[str, Backend] = {"batched": BatchedBackend(), "grouped": GroupedBackend(),
                                "reference": ReferenceBackend()}
#: On CPUs, banks with at most this many entries per slot (``C·C'``) default to ``batched``.
CPU_NARROW_BANK = 64 * 64


def default_order(layout: Layout, x: torch.Tensor,
                  weights: List[Optional[torch.Tensor]]) -> List[str]:
    """Backend names in the order ``backend=None`` tries them for these inputs."""
    widest = max([w.shape[-2] * w.shape[-1] for w in weights if w is not None and w.dim() == 3],
                 default=0)
    if x.device.type != "cpu" or widest <= CPU_NARROW_BANK:
        return ["batched", "grouped", "reference"]
    return ["grouped", "batched", "reference"]


def select_backend(backend: Union[None, str, Backend], layout: Layout, x: torch.Tensor,
                   weights: List[Optional[torch.Tensor]]) -> Backend:
    """Resolve ``backend`` (``None``, a name from :data:`BACKENDS`, or an instance)."""
    if backend is None:
        reasons = {}
        for name in default_order(layout, x, weights):
            why = BACKENDS[name].not_supported_reasons(layout, x, weights)
            if not why:
                return BACKENDS[name]
            reasons[name] = why
        raise ValueError("no backend can run these inputs: " + "; ".join(
            f"{name}: {', '.join(why)}" for name, why in reasons.items()))
    if isinstance(backend, str):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {sorted(BACKENDS)}")
        backend = BACKENDS[backend]
    elif not isinstance(backend, Backend):
        raise TypeError(f"backend must be None, a name or a Backend, got {type(backend).__name__}")
    why = backend.not_supported_reasons(layout, x, weights)
    if why:
        raise ValueError(f"backend {backend.name!r} cannot run these inputs: " + "; ".join(why))
    return backend
