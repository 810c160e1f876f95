"""Grouped backend: the fast exact algorithm (offset-grouped GEMMs on strided views).

All pairs that share one geometric relation (one offset of the grid, or one of the three
class-token relations) share one weight per projection, and on a regular layout they are a
rectangle of query tokens and the same rectangle shifted by the offset. So each relative
projection is an ordinary dense matrix product on a strided view of the input, and the per-pair
scores / weights of those pairs form a strided "diagonal" view of the ``(B, heads, N, N)`` score
tensor. Nothing of size ``N×N×C×C'`` or ``B×N×N×C'`` is ever built: besides the inputs, the
weights and one ``(B, heads, N, N)`` tensor, the working set is one group's ``(B, n_g, C')``
temporaries. Backward recomputes each group's projections instead of storing them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from ..layouts import Layout
from .base import Backend, split_heads

@dataclass(frozen=True)
class _Rows:
    """A set of tokens as a strided view of a contiguous ``(B, N, F)`` tensor: ``sizes`` per
    axis, ``strides`` in tokens, first token ``offset``."""

    sizes: Tuple[int, ...]
    strides: Tuple[int, ...]
    offset: int


@dataclass(frozen=True)
class _Group:
    """One pair group: its slots, query and key token sets, and its pairs as a strided view of a
    contiguous ``(B, heads, N, N)`` tensor (``rect`` sizes, ``pair_strides``, ``pair_offset``)."""

    slot_q: int
    slot_k: int
    slot_v: int
    q: _Rows
    k: _Rows
    rect: Tuple[int, ...]
    pair_strides: Tuple[int, ...]
    pair_offset: int


@functools.lru_cache(maxsize=256)
def _plan(layout: Layout) -> List[_Group]:
    """Every pair group of ``layout`` with its strided geometry (see :class:`_Group`)."""
    n, start = layout.num_tokens, int(layout.cls_token)
    axis = [1] * layout.ndim                      # token stride of each grid axis (row-major)
    for a in range(layout.ndim - 2, -1, -1):
        axis[a] = axis[a + 1] * layout.shape[a + 1]
    patches = layout.num_positioned
    plan = []
    for g in layout.pair_groups():
        if g.kind == "grid":
            rect = tuple(s - abs(d) for d, s in zip(g.offset, layout.shape))
            q0 = start + sum(max(0, d) * st for d, st in zip(g.offset, axis))
            k0 = start + sum(max(0, -d) * st for d, st in zip(g.offset, axis))
            q, k = _Rows(rect, tuple(axis), q0), _Rows(rect, tuple(axis), k0)
            pair = (tuple(st * (n + 1) for st in axis), q0 * n + k0)
        else:
            cls, grid = _Rows((1,), (1,), 0), _Rows((patches,), (1,), start)
            q, k, rect, pair = {
                "cls_cls": (cls, cls, (1,), ((1,), 0)),
                "cls_query": (cls, grid, (patches,), ((1,), start)),
                "cls_key": (grid, cls, (patches,), ((n,), start * n)),
            }[g.kind]
        plan.append(_Group(g.slot_q, g.slot_k, g.slot_v, q, k, rect, *pair))
    return plan


def _rows(t: torch.Tensor, rows: _Rows) -> torch.Tensor:
    """Contiguous ``(B, N, F)`` → the view ``(B, *rows.sizes, F)``."""
    b, n, f = t.shape
    return t.as_strided((b, *rows.sizes, f), (n * f, *(s * f for s in rows.strides), 1),
                        t.storage_offset() + rows.offset * f)


def _pairs(t: torch.Tensor, g: _Group) -> torch.Tensor:
    """Contiguous ``(B, heads, N, N)`` → the group's pairs, a view ``(B, heads, *rect)``."""
    b, h, n, _ = t.shape
    return t.as_strided((b, h, *g.rect), (h * n * n, n * n, *g.pair_strides),
                        t.storage_offset() + g.pair_offset)


class _Side:
    """One projection (input ``x`` and weight ``w``: bank, plain matrix, or ``None`` = identity)
    with its gradient accumulators."""

    def __init__(self, x: torch.Tensor, w: Optional[torch.Tensor]):
        self.x, self.w = x, w
        self.relative = w is not None and w.dim() == 3
        if w is None:
            self.full = x
        elif not self.relative:
            self.full = x @ w                                            # (B, N, C')
        else:
            self.full = None
            self.mats = w.unbind(0)                   # per-slot (C, C') views, indexed cheaply
        self.dtype = x.dtype if w is None else torch.promote_types(x.dtype, w.dtype)

    def project(self, rows: _Rows, slot: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The projected tokens ``(B, *rows.sizes, C')`` and, for banks, the flattened input."""
        if not self.relative:
            return _rows(self.full, rows), None
        xv = _rows(self.x, rows)
        x_flat = xv.flatten(0, -2)
        return (x_flat @ self.mats[slot]).unflatten(0, xv.shape[:-1]), x_flat

    # -- backward ---------------------------------------------------------------------------
    def start_grad(self, need_x: bool, need_w: bool):
        self.need_x, self.need_w = need_x, need_w
        self.dx = torch.zeros_like(self.x) if need_x else None
        # banks accumulate per slot; a plain matrix gets its gradient in one GEMM at the end
        self.dw = torch.zeros_like(self.w) if (need_w and self.relative) else None
        self.dw_mats = self.dw.unbind(0) if self.dw is not None else None
        self.dfull = (torch.zeros(*self.x.shape[:-1], self.full.shape[-1], dtype=self.full.dtype,
                                  device=self.x.device)
                      if not self.relative and (need_x or need_w) else None)

    def accumulate(self, rows: _Rows, slot: int, x_flat, dproj: torch.Tensor):
        """Add the gradient of this group's projection ``dproj`` ``(B, *rows.sizes, C')``."""
        if not self.relative:
            if self.dfull is not None:
                _rows(self.dfull, rows).add_(dproj)
            return
        d_flat = dproj.flatten(0, -2)
        if self.dw is not None:
            self.dw_mats[slot].addmm_(x_flat.t(), d_flat)
        if self.dx is not None:
            _rows(self.dx, rows).add_((d_flat @ self.mats[slot].t()).unflatten(0, dproj.shape[:-1]))

    def finish_grad(self) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        if self.dfull is not None:
            if self.w is None:
                self.dx = self.dfull if self.need_x else None
            else:
                if self.need_w:
                    self.dw = self.x.flatten(0, -2).t() @ self.dfull.flatten(0, -2)
                if self.need_x:
                    self.dx = self.dfull @ self.w.t()
        return self.dx, self.dw


def _score_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def _finish_scores(scores: torch.Tensor, layout: Layout, scale: float) -> torch.Tensor:
    """Scale the written pairs, then set the pairs a causal layout never writes to ``-inf``
    (after scaling, so a scale <= 0 cannot turn the fill into NaN or +inf)."""
    if scale != 1.0:
        scores.mul_(scale)
    if layout.causal:
        n = layout.num_tokens
        scores.masked_fill_(torch.ones(n, n, dtype=torch.bool, device=scores.device).triu_(1),
                            float("-inf"))
    return scores


class _PairScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xq, xk, wq, wk, layout, heads, scale):
        xq, xk = xq.contiguous(), xk.contiguous()
        ctx.save_for_backward(xq, xk, wq, wk)
        ctx.layout, ctx.heads, ctx.scale = layout, heads, scale
        q_side, k_side = _Side(xq, wq), _Side(xk, wk)
        dtype = _score_dtype(xq)
        n = layout.num_tokens
        scores = torch.empty(xq.shape[0], heads, n, n, dtype=dtype, device=xq.device)
        for g in _plan(layout):
            q, _ = q_side.project(g.q, g.slot_q)
            k, _ = k_side.project(g.k, g.slot_k)
            s = torch.linalg.vecdot(split_heads(q, heads), split_heads(k, heads))  # (B, *rect, h)
            _pairs(scores, g).copy_(s.movedim(-1, 1))
        return _finish_scores(scores, layout, scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, dscores):
        xq, xk, wq, wk = ctx.saved_tensors
        layout, heads, scale = ctx.layout, ctx.heads, ctx.scale
        need = ctx.needs_input_grad
        q_side, k_side = _Side(xq, wq), _Side(xk, wk)
        q_side.start_grad(need[0], need[2])
        k_side.start_grad(need[1], need[3])
        dscores = (dscores * scale).to(xq.dtype).contiguous()
        for g in _plan(layout):
            q, xq_flat = q_side.project(g.q, g.slot_q)
            k, xk_flat = k_side.project(g.k, g.slot_k)
            q, k = split_heads(q, heads), split_heads(k, heads)
            grad = _pairs(dscores, g).movedim(1, -1)[..., None]          # (B, *rect, h, 1)
            if need[0] or need[2]:
                q_side.accumulate(g.q, g.slot_q, xq_flat,
                                  (grad * k).sum_to_size(q.shape).flatten(-2))
            if need[1] or need[3]:
                k_side.accumulate(g.k, g.slot_k, xk_flat,
                                  (grad * q).sum_to_size(k.shape).flatten(-2))
        dxq, dwq = q_side.finish_grad()
        dxk, dwk = k_side.finish_grad()
        return dxq, dxk, dwq, dwk, None, None, None


class _PairMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn, xv, wv, layout, heads):
        attn, xv = attn.contiguous(), xv.contiguous()
        ctx.save_for_backward(attn, xv, wv)
        ctx.layout, ctx.heads = layout, heads
        v_side = _Side(xv, wv)
        width = xv.shape[-1] if wv is None else wv.shape[-1]
        out = torch.zeros(xv.shape[0], layout.num_tokens, width, dtype=v_side.dtype,
                          device=xv.device)
        weights = attn.to(v_side.dtype)
        for g in _plan(layout):
            v, _ = v_side.project(g.k, g.slot_v)
            a = _pairs(weights, g).movedim(1, -1)[..., None]               # (B, *rect, h, 1)
            o = split_heads(_rows(out, g.q), heads)                        # (B, *q sizes, h, dh)
            v = split_heads(v, heads)
            if o.shape[:-1] == a.shape[:-1]:
                o.addcmul_(a, v)
            else:                                     # the class token queries every patch
                o.add_((a * v).sum_to_size(o.shape))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        attn, xv, wv = ctx.saved_tensors
        layout, heads = ctx.layout, ctx.heads
        need = ctx.needs_input_grad
        v_side = _Side(xv, wv)
        v_side.start_grad(need[1], need[2])
        dout = dout.to(v_side.dtype).contiguous()
        weights = attn.to(v_side.dtype)
        dattn = torch.zeros_like(attn) if need[0] else None
        for g in _plan(layout):
            v, xv_flat = v_side.project(g.k, g.slot_v)
            v = split_heads(v, heads)
            go = split_heads(_rows(dout, g.q), heads)
            if dattn is not None:
                _pairs(dattn, g).copy_(torch.linalg.vecdot(go, v).movedim(-1, 1))
            if need[1] or need[2]:
                a = _pairs(weights, g).movedim(1, -1)[..., None]
                v_side.accumulate(g.k, g.slot_v, xv_flat,
                                  (a * go).sum_to_size(v.shape).flatten(-2))
        dxv, dwv = v_side.finish_grad()
        return dattn, dxv, dwv, None, None


class GroupedBackend(Backend):
    """Fast exact backend (the default): offset-grouped GEMMs, recompute in backward."""

    name = "grouped"

    def not_supported_reasons(self, layout, x, weights) -> List[str]:
        if not hasattr(layout, "pair_groups"):
            return [f"layout {type(layout).__name__} does not enumerate pair groups"]
        return []

    def pair_scores(self, xq, xk, wq, wk, layout, heads, scale):
        return _PairScores.apply(xq, xk, wq, wk, layout, heads, float(scale))

    def pair_mix(self, attn, xv, wv, layout, heads):
        return _PairMix.apply(attn, xv, wv, layout, heads)
