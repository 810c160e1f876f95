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
from typing import List, Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from ..layouts import Layout, PairGroup
from .base import Backend, split_heads

_Plan = List[Tuple[PairGroup, tuple, tuple]]


@functools.lru_cache(maxsize=256)
def _plan(layout: Layout) -> _Plan:
    """Each pair group with the grid slices of its query and key tokens."""
    plan = []
    for group in layout.pair_groups():
        if group.kind == "grid":
            q = tuple(slice(max(0, d), s + min(0, d)) for d, s in zip(group.offset, layout.shape))
            k = tuple(slice(max(0, -d), s - max(0, d)) for d, s in zip(group.offset, layout.shape))
        else:
            q = k = ()
        plan.append((group, q, k))
    return plan


def _token_view(t: torch.Tensor, layout: Layout, group: PairGroup, slices: tuple,
                side: str) -> torch.Tensor:
    """``(B, N, F)`` → the group's query or key tokens, ``(B, *rect, F)`` or ``(B, 1, F)``."""
    start = int(layout.cls_token)
    if group.kind == "grid":
        return t[:, start:].unflatten(1, layout.shape)[(slice(None),) + slices + (slice(None),)]
    is_cls = {"cls_cls": True, "cls_query": side == "q", "cls_key": side == "k"}[group.kind]
    return t[:, :1] if is_cls else t[:, start:]


def _pair_view(s: torch.Tensor, layout: Layout, group: PairGroup) -> torch.Tensor:
    """``(B, heads, N, N)`` → the group's pairs as a strided view ``(B, heads, *rect)``."""
    start = int(layout.cls_token)
    if group.kind == "cls_cls":
        return s[:, :, :1, 0]
    if group.kind == "cls_query":
        return s[:, :, 0, start:]
    if group.kind == "cls_key":
        return s[:, :, start:, 0]
    nd = layout.ndim
    view = s[:, :, start:, start:].unflatten(3, layout.shape).unflatten(2, layout.shape)
    for axis, d in enumerate(group.offset):
        # pairs (query r, key r − d) of this axis: a diagonal, appended as the last dim
        view = view.diagonal(offset=-d, dim1=2, dim2=2 + nd - axis)
    return view


class _Side:
    """One projection (input ``x`` and weight ``w``: bank, plain matrix, or ``None`` = identity)
    with its gradient accumulators."""

    def __init__(self, x: torch.Tensor, w: Optional[torch.Tensor], side: str):
        self.x, self.w, self.side = x, w, side
        self.relative = w is not None and w.dim() == 3
        if w is None:
            self.full = x
        elif not self.relative:
            self.full = x @ w                                            # (B, N, C')
        else:
            self.full = None

    def project(self, layout, group, slices, slot) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The group's projected tokens ``(B, *rect, C')`` and, for banks, the flattened input."""
        if not self.relative:
            return _token_view(self.full, layout, group, slices, self.side), None
        xv = _token_view(self.x, layout, group, slices, self.side)
        x_flat = xv.reshape(-1, xv.shape[-1])
        return (x_flat @ self.w[slot]).view(*xv.shape[:-1], -1), x_flat

    # -- backward ---------------------------------------------------------------------------
    def start_grad(self, need_x: bool, need_w: bool):
        self.need_x, self.need_w = need_x, need_w
        self.dx = torch.zeros_like(self.x) if need_x else None
        self.dw = torch.zeros_like(self.w) if (need_w and self.w is not None) else None
        self.dfull = (torch.zeros(*self.x.shape[:-1], self.full.shape[-1], dtype=self.full.dtype,
                                  device=self.x.device)
                      if not self.relative and (need_x or need_w) else None)

    def accumulate(self, layout, group, slices, slot, x_flat, dproj: torch.Tensor):
        """Add the gradient of this group's projection ``dproj`` ``(B, *rect, C')``."""
        if not self.relative:
            if self.dfull is not None:
                _token_view(self.dfull, layout, group, slices, self.side).add_(dproj)
            return
        d_flat = dproj.reshape(-1, dproj.shape[-1])
        if self.dw is not None:
            self.dw[slot].addmm_(x_flat.t(), d_flat)
        if self.dx is not None:
            _token_view(self.dx, layout, group, slices, self.side).add_(
                (d_flat @ self.w[slot].t()).view(dproj.shape[:-1] + (-1,)))

    def finish_grad(self) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        if self.dfull is not None:
            if self.w is None:
                self.dx = self.dfull if self.need_x else None
            else:
                if self.need_w:
                    self.dw = self.x.reshape(-1, self.x.shape[-1]).t() @ self.dfull.reshape(
                        -1, self.dfull.shape[-1])
                if self.need_x:
                    self.dx = self.dfull @ self.w.t()
        return self.dx, self.dw


def _score_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def _new_pairs(layout: Layout, batch: int, heads: int, dtype, device) -> torch.Tensor:
    n = layout.num_tokens
    if layout.causal:
        return torch.full((batch, heads, n, n), float("-inf"), dtype=dtype, device=device)
    return torch.empty(batch, heads, n, n, dtype=dtype, device=device)  # every pair is written


class _PairScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xq, xk, wq, wk, layout, heads, scale):
        ctx.save_for_backward(xq, xk, wq, wk)
        ctx.layout, ctx.heads, ctx.scale = layout, heads, scale
        q_side, k_side = _Side(xq, wq, "q"), _Side(xk, wk, "k")
        dtype = _score_dtype(xq)
        scores = _new_pairs(layout, xq.shape[0], heads, dtype, xq.device)
        for group, qs, ks in _plan(layout):
            q, _ = q_side.project(layout, group, qs, group.slot_q)
            k, _ = k_side.project(layout, group, ks, group.slot_k)
            s = torch.linalg.vecdot(split_heads(q, heads), split_heads(k, heads)).to(dtype)
            _pair_view(scores, layout, group).copy_((s * scale).movedim(-1, 1))
        return scores

    @staticmethod
    @once_differentiable
    def backward(ctx, dscores):
        xq, xk, wq, wk = ctx.saved_tensors
        layout, heads, scale = ctx.layout, ctx.heads, ctx.scale
        need = ctx.needs_input_grad
        q_side, k_side = _Side(xq, wq, "q"), _Side(xk, wk, "k")
        q_side.start_grad(need[0], need[2])
        k_side.start_grad(need[1], need[3])
        dscores = dscores.contiguous()
        for group, qs, ks in _plan(layout):
            q, xq_flat = q_side.project(layout, group, qs, group.slot_q)
            k, xk_flat = k_side.project(layout, group, ks, group.slot_k)
            q, k = split_heads(q, heads), split_heads(k, heads)
            g = (_pair_view(dscores, layout, group).movedim(1, -1) * scale).to(q.dtype)[..., None]
            if need[0] or need[2]:
                dq = (g * k).sum_to_size(q.shape).flatten(-2)
                q_side.accumulate(layout, group, qs, group.slot_q, xq_flat, dq)
            if need[1] or need[3]:
                dk = (g * q).sum_to_size(k.shape).flatten(-2)
                k_side.accumulate(layout, group, ks, group.slot_k, xk_flat, dk)
        dxq, dwq = q_side.finish_grad()
        dxk, dwk = k_side.finish_grad()
        return dxq, dxk, dwq, dwk, None, None, None


class _PairMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn, xv, wv, layout, heads):
        ctx.save_for_backward(attn, xv, wv)
        ctx.layout, ctx.heads = layout, heads
        v_side = _Side(xv, wv, "k")
        out = None
        for group, qs, ks in _plan(layout):
            v, _ = v_side.project(layout, group, ks, group.slot_v)
            v = split_heads(v, heads)
            if out is None:
                out = torch.zeros(xv.shape[0], layout.num_tokens, v.shape[-2] * v.shape[-1],
                                  dtype=v.dtype, device=xv.device)
            a = _pair_view(attn, layout, group).movedim(1, -1).to(v.dtype)[..., None]
            o_view = _token_view(out, layout, group, qs, "q")
            o_view.add_((a * v).sum_to_size(o_view.shape[:-1] + (heads, v.shape[-1])).flatten(-2))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        attn, xv, wv = ctx.saved_tensors
        layout, heads = ctx.layout, ctx.heads
        need = ctx.needs_input_grad
        v_side = _Side(xv, wv, "k")
        v_side.start_grad(need[1], need[2])
        dattn = torch.zeros_like(attn) if need[0] else None
        for group, qs, ks in _plan(layout):
            v, xv_flat = v_side.project(layout, group, ks, group.slot_v)
            v = split_heads(v, heads)
            go = split_heads(_token_view(dout, layout, group, qs, "q"), heads).to(v.dtype)
            if dattn is not None:
                da = torch.linalg.vecdot(go, v).to(attn.dtype)
                _pair_view(dattn, layout, group).copy_(da.movedim(-1, 1))
            if need[1] or need[2]:
                a = _pair_view(attn, layout, group).movedim(1, -1).to(v.dtype)[..., None]
                dv = (a * go).sum_to_size(v.shape).flatten(-2)
                v_side.accumulate(layout, group, ks, group.slot_v, xv_flat, dv)
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
