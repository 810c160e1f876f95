"""The far slot of clipped 1-D layouts, shared by the grouped and batched backends.

With ``max_distance=K`` all pairs further apart than ``K`` in one direction share one slot: a
triangle of ``m = N_pos - K - 1`` queries × ``m`` keys. Each token is projected once through it
and the triangle is scored / mixed by per-head matmuls over blocks of queries with a mask, so
clipped sequences cost ``O(N·(K+1)·C·C' + N²·C')`` instead of ``O(N²·C·C')``. Projections are
passed head-last ``(B, heads, m, C'/heads)``; scores, weights and their gradients are
``(B, heads, N, N)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Tuple

import torch

from ..layouts import Layout, PairGroup


@dataclass(frozen=True)
class Far:
    """One direction's far pairs: queries ``q0 … q0+m-1``, keys ``k0 … k0+m-1``; the pair of the
    a-th query and b-th key is attended iff ``b <= a`` (``lower``) or ``b >= a``."""

    slot_q: int
    slot_k: int
    slot_v: int
    q0: int
    k0: int
    m: int
    lower: bool


def is_far(layout: Layout, group: PairGroup) -> bool:
    """Whether ``group`` (of ``layout.pair_groups()``) lies in one of :func:`far_pairs`."""
    return (layout.ndim == 1 and layout.max_distance is not None and group.kind == "grid"
            and abs(group.offset[0]) > layout.radii[0])


@functools.lru_cache(maxsize=64)
def far_pairs(layout: Layout) -> Tuple[Far, ...]:
    """The :class:`Far` groups of a clipped 1-D layout (none for other layouts)."""
    k, start = layout.radii[0], int(layout.cls_token)
    slots = {g.offset[0] > 0: g for g in layout.pair_groups() if is_far(layout, g)}
    return tuple(Far(g.slot_q, g.slot_k, g.slot_v, start + (k + 1 if lower else 0),
                     start + (0 if lower else k + 1), layout.shape[0] - k - 1, lower)
                 for lower, g in slots.items())


def blocks(f: Far, step: int, device):
    """Blocks of ``step`` queries: ``(a, b, mask)`` with ``a``, ``b`` the slices of the queries
    and keys involved and ``mask`` ``(len a, len b)`` their attended pairs."""
    for a0 in range(0, f.m, step):
        a1 = min(f.m, a0 + step)
        b0, b1 = (0, a1) if f.lower else (a0, f.m)
        ia = torch.arange(a0, a1, device=device)[:, None]
        ib = torch.arange(b0, b1, device=device)
        yield slice(a0, a1), slice(b0, b1), (ib <= ia) if f.lower else (ib >= ia)


def block(t: torch.Tensor, f: Far, a: slice, b: slice) -> torch.Tensor:
    """The pairs ``(a, b)`` of ``f`` in a ``(B, heads, N, N)`` tensor (a view)."""
    return t[:, :, f.q0 + a.start:f.q0 + a.stop, f.k0 + b.start:f.k0 + b.stop]


def scores(out: torch.Tensor, f: Far, qh, kh, step: int, scale: float = 1.0):
    """Write ``scale·<q_a, k_b>`` per head into ``out`` (``qh``, ``kh`` in ``out``'s dtype)."""
    for a, b, mask in blocks(f, step, qh.device):
        s = qh[:, :, a] @ kh[:, :, b].transpose(-1, -2)
        dst = block(out, f, a, b)
        dst.copy_(torch.where(mask, s.mul_(scale) if scale != 1.0 else s, dst))


def scores_grad(dscores: torch.Tensor, f: Far, qh, kh, dqh, dkh, step: int, scale: float = 1.0):
    """Add the gradients of ``qh`` / ``kh`` to ``dqh`` / ``dkh`` (each may be ``None``)."""
    for a, b, mask in blocks(f, step, qh.device):
        ds = block(dscores, f, a, b).masked_fill(~mask, 0)
        if scale != 1.0:
            ds.mul_(scale)
        if dqh is not None:
            dqh[:, :, a].add_(ds @ kh[:, :, b])
        if dkh is not None:
            dkh[:, :, b].add_(ds.transpose(-1, -2) @ qh[:, :, a])


def mix(oh: torch.Tensor, weights: torch.Tensor, f: Far, vh, step: int):
    """Add ``Σ_b w_ab v_b`` per head to the queries' outputs ``oh``."""
    for a, b, mask in blocks(f, step, vh.device):
        oh[:, :, a].add_(block(weights, f, a, b).masked_fill(~mask, 0) @ vh[:, :, b])


def mix_grad(goh, weights, dattn, f: Far, vh, dvh, step: int):
    """Write ``<go_a, v_b>`` into ``dattn`` (if any; at least float32) and add the gradient of
    ``vh`` to ``dvh`` (if any); ``goh``: the queries' output gradients."""
    dtype = torch.promote_types(vh.dtype, torch.float32)
    for a, b, mask in blocks(f, step, vh.device):
        if dattn is not None:
            dst = block(dattn, f, a, b)
            s = goh[:, :, a].to(dtype) @ vh[:, :, b].to(dtype).transpose(-1, -2)
            dst.copy_(torch.where(mask, s.to(dst.dtype), dst))
        if dvh is not None:
            w = block(weights, f, a, b).masked_fill(~mask, 0)
            dvh[:, :, b].add_(w.transpose(-1, -2) @ goh[:, :, a])
