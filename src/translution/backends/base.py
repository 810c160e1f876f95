"""The backend interface: two pair primitives that Translution and α-Translution are built from.

* ``pair_scores(xq, xk, wq, wk, layout, heads, scale) -> (B, heads, N, N)``:
  ``scale · <xq_i · wq[slot(i,j)], xk_j · wk[slot(j,i)]>`` per head, ``-inf`` where the layout
  does not attend (causal). Accumulated in at least float32.
* ``pair_mix(attn, xv, wv, layout, heads) -> (B, N, C')``:
  ``Σ_j attn[:, h, i, j] · (xv_j · wv[slot(i,j)])`` per head.

Both take ``save_projections=False``: ``True`` asks the backend to keep the per-pair projections
(q, k / v) for backward instead of recomputing them: faster, for ``B·P·C'`` more floats per
projection (``P`` attended pairs). Backends that never recompute accept and ignore it.

Each weight is a bank ``(slots, C, C')`` (relative), a plain matrix ``(C, C')`` (shared by all
pairs) or ``None`` (identity: the input is used as it is).
"""

from __future__ import annotations

from typing import List, Optional

import torch

from ..layouts import Layout


def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """``(..., heads·dh) -> (..., heads, dh)`` (a view)."""
    return t.unflatten(-1, (heads, t.shape[-1] // heads))


class Backend:
    """A way to compute the pair primitives. Subclasses set ``name`` and implement them."""

    name = "abstract"

    def not_supported_reasons(self, layout: Layout, x: torch.Tensor,
                              weights: List[Optional[torch.Tensor]]) -> List[str]:
        """Why this backend cannot run these inputs (empty list: it can)."""
        return []

    def pair_scores(self, xq, xk, wq, wk, layout: Layout, heads: int, scale: float,
                    save_projections: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def pair_mix(self, attn, xv, wv, layout: Layout, heads: int,
                 save_projections: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self):
        return f"<translution backend {self.name!r}>"
