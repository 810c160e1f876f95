"""Reference backend: the literal per-pair definition of SPEC §1 (the test oracle).

It gathers every pair's weight (``W[slot_index]``, an ``N×N×C×C'`` tensor) and every pair's
projected vector (``B×N×N×C'``), exactly as the paper's code does. Use it only on small sizes
(tests, and as the benchmark's "paper algorithm" baseline); autograd provides the gradients.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from ..layouts import Layout
from .base import Backend, split_heads


def _pair_vectors(x: torch.Tensor, w: Optional[torch.Tensor], index: torch.Tensor,
                  side: str) -> torch.Tensor:
    """Per-pair projections ``(B, N, N, C')``: row ``i`` (query) or column ``j`` (key) token,
    multiplied by the pair's own slot matrix; plain or identity weights broadcast instead."""
    if w is None or w.dim() == 2:
        proj = x if w is None else x @ w
        return proj[:, :, None, :] if side == "query" else proj[:, None, :, :]
    gathered = w[index.to(w.device)]                           # (N, N, C, C') literal gather
    pattern = "bic,ijcd->bijd" if side == "query" else "bjc,ijcd->bijd"
    return torch.einsum(pattern, x, gathered)


class ReferenceBackend(Backend):
    """Literal per-pair computation with gathered weights.

    Args:
        max_gathered_bytes: refuse inputs whose gathered weight or pair tensors would exceed this
            many bytes (``None``: no limit; the benchmark uses that for the paper's algorithm).
    """

    name = "reference"

    def __init__(self, max_gathered_bytes: Optional[int] = 4 << 30):
        self.max_gathered_bytes = max_gathered_bytes

    def not_supported_reasons(self, layout: Layout, x: torch.Tensor,
                              weights: List[Optional[torch.Tensor]]) -> List[str]:
        if self.max_gathered_bytes is None:
            return []
        n, b = layout.num_tokens, x.shape[0]
        need = 0
        for w in weights:
            if w is not None and w.dim() == 3:
                need = max(need, n * n * w.shape[1] * w.shape[2] * w.element_size(),
                           b * n * n * w.shape[2] * x.element_size())
        if need > self.max_gathered_bytes:
            return [f"the reference backend would materialise {need / 2**30:.2f} GiB of gathered "
                    f"weights or pair tensors (limit {self.max_gathered_bytes / 2**30:.2f} GiB)"]
        return []

    @torch.compiler.disable
    def pair_scores(self, xq, xk, wq, wk, layout, heads, scale, save_projections=False):
        # autograd keeps the gathered pair tensors anyway: save_projections changes nothing
        q = _pair_vectors(xq, wq, layout.slot_index(), "query")        # (B, N|1, N|1, C')
        k = _pair_vectors(xk, wk, layout.key_slot_index(), "key")
        dtype = torch.promote_types(q.dtype, torch.float32)
        scores = (split_heads(q, heads) * split_heads(k, heads)).sum(-1, dtype=dtype)
        scores = scores.expand(-1, layout.num_tokens, layout.num_tokens, -1).permute(0, 3, 1, 2)
        scores = scores * scale                                         # (B, heads, N, N)
        allowed = layout.allowed()
        if allowed is not None:
            scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
        return scores

    @torch.compiler.disable
    def pair_mix(self, attn, xv, wv, layout, heads, save_projections=False):
        v = split_heads(_pair_vectors(xv, wv, layout.slot_index(), "key"), heads)
        v = v.expand(-1, layout.num_tokens, -1, -1, -1)                 # (B, N, N, heads, dh)
        out = torch.einsum("bhij,bijhd->bihd", attn.to(v.dtype), v)
        return out.flatten(-2)                                          # (B, N, C')
