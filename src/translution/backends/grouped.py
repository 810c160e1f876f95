"""Grouped backend: the fast exact algorithm (offset-grouped GEMMs on strided views).

All pairs that share one geometric relation (one offset of the grid, or one of the three
class-token relations) share one weight per projection, and on a regular layout they are a
rectangle of query tokens and the same rectangle shifted by the offset. So each relative
projection is an ordinary dense matrix product on a strided view of the input, and the per-pair
scores / weights of those pairs form a strided "diagonal" view of the ``(B, heads, N, N)`` score
tensor. Nothing of size ``N×N×C×C'`` or ``B×N×N×C'`` is ever built: besides the inputs, the
weights and one ``(B, heads, N, N)`` tensor, the working set is one group's ``(B, n_g, C')``
temporaries and, per projection, one crop of the input (and of its gradient) of at most
``(B, N, C)``. Backward recomputes each group's projections, unless ``save_projections`` keeps
them (``3·B·P·C'`` more floats for ``P`` attended pairs).

The far slot of a clipped 1-D layout (``|δ| > K``, a triangle per direction) is one group: its
tokens are projected once each and its pairs scored / mixed by per-head matmuls over blocks of
queries, so clipped sequences cost ``O(N·(K+1)·C·C' + N²·C')`` instead of ``O(N²·C·C')``.

Memory layout (for speed on small groups, where element-wise passes cost as much as the GEMMs):
inputs are used token-major ``(N, B, C)`` and projections channel-major ``(C', N, B)``; the
GEMMs transpose for free, the per-head reductions then run over an outer axis, and a group's
rows are ``|rect|·B`` long runs.
"""

from __future__ import annotations

import functools
from dataclasses import astuple, dataclass
from typing import List, Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from ..layouts import Layout
from . import far
from .base import Backend

@dataclass(frozen=True)
class _Rows:
    """A set of tokens: ``sizes`` per axis, ``strides`` in tokens, first token ``offset``; for a
    box of a grid with two or more axes also ``box``, its ``(start, size)`` per grid axis."""

    sizes: Tuple[int, ...]
    strides: Tuple[int, ...]
    offset: int
    box: Optional[Tuple[Tuple[int, int], ...]] = None


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


class _Far(far.Far):
    """A :class:`~translution.backends.far.Far` group with its query and key rows."""

    q = property(lambda self: _Rows((self.m,), (1,), self.q0))
    k = property(lambda self: _Rows((self.m,), (1,), self.k0))


@functools.lru_cache(maxsize=256)
def _plan(layout: Layout) -> list:
    """Every pair group of ``layout`` with its strided geometry (see :class:`_Group`; the far
    groups of clipped 1-D layouts first, see :class:`_Far`); grid groups are ordered by their
    offset on the trailing axes, so groups whose boxes share those axes' ranges come one after
    another (see :class:`_Crops`)."""
    n, start = layout.num_tokens, int(layout.cls_token)
    axis = [1] * layout.ndim                      # token stride of each grid axis (row-major)
    for a in range(layout.ndim - 2, -1, -1):
        axis[a] = axis[a + 1] * layout.shape[a + 1]
    patches = layout.num_positioned
    plan = []
    for g in layout.pair_groups():
        if far.is_far(layout, g):
            continue                                  # one _Far group per direction instead
        if g.kind == "grid":
            rect = tuple(s - abs(d) for d, s in zip(g.offset, layout.shape))
            q0 = start + sum(max(0, d) * st for d, st in zip(g.offset, axis))
            k0 = start + sum(max(0, -d) * st for d, st in zip(g.offset, axis))
            boxes = [tuple((max(0, sign * d), s) for d, s in zip(g.offset, rect))
                     if layout.ndim > 1 else None for sign in (1, -1)]
            q, k = (_Rows(rect, tuple(axis), r0, box) for r0, box in zip((q0, k0), boxes))
            pair = (tuple(st * (n + 1) for st in axis), q0 * n + k0)
        else:
            cls, grid = _Rows((1,), (1,), 0), _Rows((patches,), (1,), start)
            q, k, rect, pair = {
                "cls_cls": (cls, cls, (1,), ((1,), 0)),
                "cls_query": (cls, grid, (patches,), ((1,), start)),
                "cls_key": (grid, cls, (patches,), ((n,), start * n)),
            }[g.kind]
        plan.append(_Group(g.slot_q, g.slot_k, g.slot_v, q, k, rect, *pair))
    plan = sorted(plan, key=lambda g: (g.q.box is None, g.q.box and g.q.box[1:]))
    return [_Far(*astuple(f)) for f in far.far_pairs(layout)] + plan


def _tm_rows(x: torch.Tensor, rows: _Rows) -> torch.Tensor:
    """Token-major ``(N, B, C)`` → the view ``(*rows.sizes, B, C)``."""
    _, b, c = x.shape
    return x.as_strided((*rows.sizes, b, c), (*(s * b * c for s in rows.strides), c, 1),
                        x.storage_offset() + rows.offset * b * c)


def _cm_rows(t: torch.Tensor, rows: _Rows) -> torch.Tensor:
    """Channel-major ``(C', N, B)`` → the view ``(C', *rows.sizes, B)``."""
    f, n, b = t.shape
    return t.as_strided((f, *rows.sizes, b), (n * b, *(s * b for s in rows.strides), 1),
                        t.storage_offset() + rows.offset * b)


def _pairs(t: torch.Tensor, g: _Group) -> torch.Tensor:
    """Contiguous ``(B, heads, N, N)`` → the group's pairs as the view ``(heads, *rect, B)``."""
    b, h, n, _ = t.shape
    return t.as_strided((h, *g.rect, b), (n * n, *g.pair_strides, h * n * n),
                        t.storage_offset() + g.pair_offset)


def _per_head(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Channel-major ``(C', *rest)`` → ``(heads, C'/heads, *rest)`` (a view)."""
    return t.unflatten(0, (heads, t.shape[0] // heads))


def _token_major(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(0, 1).contiguous()                                # (N, B, C)


def _fold(t: torch.Tensor) -> torch.Tensor:
    """``(*sizes, B, F)`` → ``(M, F)``: a view when the rows are contiguous, else a copy."""
    return t.flatten(0, -2)


class _Crops:
    """Contiguous copies of a token-major input ``(N, B, C)`` restricted to a box's ranges on the
    trailing grid axes (one at a time: the plan visits each such range in one run), so a box is a
    contiguous slab of rows; with ``grad``, a gradient accumulator per crop, added back to
    ``dx`` when the run ends. Saves one gather per group and projection, and the scatter of its
    input gradient."""

    def __init__(self, x: torch.Tensor, layout: Layout):
        self.x, self.start, self.shape = x, int(layout.cls_token), layout.shape
        self.key, self.crop, self.dcrop, self.dx = None, None, None, None

    def _grid(self, t: torch.Tensor) -> torch.Tensor:
        return t[self.start:].view(*self.shape, *t.shape[1:])           # (*shape, B, C)

    def _region(self, t: torch.Tensor, key) -> torch.Tensor:
        grid = self._grid(t)
        for axis, (first, size) in enumerate(key, start=1):
            grid = grid.narrow(axis, first, size)
        return grid

    def slab(self, box) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(M, C)`` input rows of ``box`` and, when accumulating, their gradient rows."""
        key = box[1:]
        if key != self.key:
            self.flush()
            self.key, self.crop = key, self._region(self.x, key).contiguous()
            self.dcrop = torch.zeros_like(self.crop) if self.dx is not None else None
        first, size = box[0]
        rows = lambda t: None if t is None else t.narrow(0, first, size).flatten(0, -2)
        return rows(self.crop), rows(self.dcrop)

    def flush(self):
        if self.dcrop is not None:
            self._region(self.dx, self.key).add_(self.dcrop)
        self.key, self.crop, self.dcrop = None, None, None


class _Side:
    """One projection of token-major input ``x`` ``(N, B, C)`` by ``w`` (bank, plain matrix, or
    ``None`` = identity), with its gradient accumulators. Projections are channel-major."""

    def __init__(self, x: torch.Tensor, w: Optional[torch.Tensor], layout: Layout):
        self.x, self.w = x, w
        self.crops = _Crops(x, layout)
        self.relative = w is not None and w.dim() == 3
        n, b, c = x.shape
        if self.relative:
            self.full = None
            self.mats = w.unbind(0)                   # per-slot (C, C') views, indexed cheaply
        elif w is None:
            self.full = x.reshape(n * b, c).t().contiguous().view(c, n, b)
        else:
            self.full = torch.mm(w.t(), x.view(n * b, c).t()).view(w.shape[1], n, b)

    def project(self, rows: _Rows, slot: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The projected tokens ``(C', *rows.sizes, B)`` and, for banks, the folded input."""
        if not self.relative:
            return _cm_rows(self.full, rows), None
        x_flat = self.inputs(rows)                                           # (M, C)
        proj = torch.mm(self.mats[slot].t(), x_flat.t())                     # (C', M)
        return proj.view(proj.shape[0], *rows.sizes, self.x.shape[1]), x_flat

    def inputs(self, rows: _Rows) -> torch.Tensor:
        """The input rows ``(M, C)`` (a view of a crop for grid boxes, else folded)."""
        return _fold(_tm_rows(self.x, rows)) if rows.box is None else self.crops.slab(rows.box)[0]

    # -- backward ---------------------------------------------------------------------------
    def start_grad(self, need_x: bool, need_w: bool, dx: Optional[torch.Tensor] = None):
        """Start accumulating; ``dx`` shares another side's input-gradient buffer."""
        self.need_x, self.need_w = need_x, need_w
        if need_x and dx is None:
            dx = torch.zeros_like(self.x)
        self.dx = dx if need_x else None
        self.crops.dx = self.dx if self.relative else None
        self.dw = torch.zeros_like(self.w) if (need_w and self.relative) else None
        self.dw_mats = self.dw.unbind(0) if self.dw is not None else None
        self.dfull = (torch.zeros_like(self.full)
                      if not self.relative and (need_x or need_w) else None)

    def accumulate(self, rows: _Rows, slot: int, x_flat, dproj: torch.Tensor):
        """Add the gradient of this group's projection ``dproj`` ``(C', *rows.sizes, B)``."""
        if not self.relative:
            if self.dfull is not None:
                _cm_rows(self.dfull, rows).add_(dproj)
            return
        d_flat = dproj.flatten(1).t()                                        # (M, C')
        if self.dw is not None:
            self.dw_mats[slot].addmm_(x_flat.t(), d_flat)
        if self.dx is not None:
            target = (_tm_rows(self.dx, rows) if rows.box is None
                      else self.crops.slab(rows.box)[1])
            if target.is_contiguous():
                target.flatten(0, -2).addmm_(d_flat, self.mats[slot].t())
            else:
                target.add_((d_flat @ self.mats[slot].t()).view(target.shape))

    def finish_grad(self) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(dx, dw)``: ``dx`` token-major ``(N, B, C)``."""
        self.crops.flush()
        if self.dfull is not None:
            n, b, c = self.x.shape
            d_flat = self.dfull.flatten(1).t()                               # (N·B, C')
            if self.w is None:
                if self.need_x:
                    self.dx.view(n * b, c).add_(d_flat)
            else:
                if self.need_w:
                    self.dw = self.x.view(n * b, c).t() @ d_flat
                if self.need_x:
                    self.dx.view(n * b, c).addmm_(d_flat, self.w.t())
        return self.dx, self.dw


def _sides(xq: torch.Tensor, xk: torch.Tensor, wq, wk, layout) -> Tuple[_Side, _Side, bool]:
    """Both sides of the scores on token-major inputs; ``shared``: ``xq`` is ``xk``."""
    shared = xq is xk
    x = _token_major(xq)
    return _Side(x, wq, layout), _Side(x if shared else _token_major(xk), wk, layout), shared


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


def _head_dot(a: torch.Tensor, b: torch.Tensor, heads: int, dtype) -> torch.Tensor:
    """Per-head dot products of channel-major ``a``, ``b`` (broadcast) → ``(heads, *rest)``,
    formed in ``dtype`` (at least float32, so fp16 products cannot overflow)."""
    if a.dtype != dtype:
        a, b = a.to(dtype), b.to(dtype)
    return _per_head(a * b, heads).sum(1)


def _weighted(t: torch.Tensor, w: torch.Tensor, heads: int, shape) -> torch.Tensor:
    """``t`` ``(C', ...)`` times per-head weights ``w`` ``(heads, ...)``, summed to ``shape``."""
    prod = _per_head(t, heads) * w.unsqueeze(1)
    return prod.flatten(0, 1).sum_to_size(shape)


def _heads_last(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Channel-major ``(C', M, B)`` → ``(B, heads, M, C'/heads)`` (a view)."""
    return _per_head(t, heads).permute(3, 0, 2, 1)


def _far_step(heads: int, width: int) -> int:
    """Queries per far block: ``max(32, C'/heads)`` keeps temporaries near ``B·M·C'``."""
    return max(32, width // heads)


class _PairScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xq, xk, wq, wk, layout, heads, scale, save):
        ctx.save_for_backward(xq, xk, wq, wk)
        ctx.layout, ctx.heads, ctx.scale = layout, heads, scale
        q_side, k_side, _ = _sides(xq, xk, wq, wk, layout)
        n, dtype = layout.num_tokens, _score_dtype(xq)
        scores = torch.empty(xq.shape[0], heads, n, n, dtype=dtype, device=xq.device)
        saved = []
        for g in _plan(layout):
            q, _ = q_side.project(g.q, g.slot_q)
            k, _ = k_side.project(g.k, g.slot_k)
            if save:
                saved.append((q, k))
            if isinstance(g, _Far):
                far.scores(scores, g, *(_heads_last(t.to(dtype), heads) for t in (q, k)),
                           _far_step(heads, q.shape[0]))
            else:
                _pairs(scores, g).copy_(_head_dot(q, k, heads, dtype))
        ctx.saved_projections = saved if save else None
        return _finish_scores(scores, layout, scale)

    @staticmethod
    @once_differentiable
    def backward(ctx, dscores):
        xq, xk, wq, wk = ctx.saved_tensors
        layout, heads, scale = ctx.layout, ctx.heads, ctx.scale
        need = ctx.needs_input_grad
        q_side, k_side, shared = _sides(xq, xk, wq, wk, layout)
        q_side.start_grad(need[0], need[2])
        k_side.start_grad(need[1], need[3], q_side.dx if shared else None)
        dscores = (dscores * scale).to(xq.dtype).contiguous()
        saved = ctx.saved_projections
        for i, g in enumerate(_plan(layout)):
            if saved is None:
                q, xq_flat = q_side.project(g.q, g.slot_q)
                k, xk_flat = k_side.project(g.k, g.slot_k)
            else:
                (q, k), xq_flat, xk_flat = saved[i], _inputs(q_side, g.q), _inputs(k_side, g.k)
            need_q, need_k = need[0] or need[2], need[1] or need[3]
            if isinstance(g, _Far):
                dq, dk = (torch.zeros_like(t, memory_format=torch.contiguous_format) if need
                          else None for t, need in ((q, need_q), (k, need_k)))
                far.scores_grad(dscores, g, _heads_last(q, heads), _heads_last(k, heads),
                                *(None if d is None else _heads_last(d, heads) for d in (dq, dk)),
                                _far_step(heads, q.shape[0]))
            else:
                grad = _pairs(dscores, g).contiguous()                      # (heads, *rect, B)
                dq = _weighted(k, grad, heads, q.shape) if need_q else None
                dk = _weighted(q, grad, heads, k.shape) if need_k else None
            if need_q:
                q_side.accumulate(g.q, g.slot_q, xq_flat, dq)
            if need_k:
                k_side.accumulate(g.k, g.slot_k, xk_flat, dk)
        ctx.saved_projections = None
        dxq, dwq = q_side.finish_grad()
        dxk, dwk = k_side.finish_grad()
        dxq = None if dxq is None else dxq.transpose(0, 1)
        dxk = None if (dxk is None or shared) else dxk.transpose(0, 1)
        return dxq, dxk, dwq, dwk, None, None, None, None


def _inputs(side: _Side, rows: _Rows) -> Optional[torch.Tensor]:
    """The folded input rows ``(M, C)`` a bank's gradient needs (``None`` for other sides)."""
    return side.inputs(rows) if side.relative else None


class _PairMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn, xv, wv, layout, heads, save):
        attn = attn.contiguous()
        ctx.save_for_backward(attn, xv, wv)
        ctx.layout, ctx.heads = layout, heads
        v_side = _Side(_token_major(xv), wv, layout)
        dtype = xv.dtype if wv is None else torch.promote_types(xv.dtype, wv.dtype)
        width = xv.shape[-1] if wv is None else wv.shape[-1]
        out = torch.zeros(width, layout.num_tokens, xv.shape[0], dtype=dtype, device=xv.device)
        weights = attn.to(dtype)
        saved = []
        for g in _plan(layout):
            v, _ = v_side.project(g.k, g.slot_v)
            if save:
                saved.append(v)
            if isinstance(g, _Far):
                far.mix(_heads_last(_cm_rows(out, g.q), heads), weights, g,
                        _heads_last(v, heads), _far_step(heads, v.shape[0]))
                continue
            o = _cm_rows(out, g.q)                                          # (C', *q sizes, B)
            a = _pairs(weights, g).contiguous()                             # (heads, *rect, B)
            if o.shape == v.shape:                                          # one fused pass
                _per_head(o, heads).addcmul_(_per_head(v, heads), a.unsqueeze(1))
            else:                                     # the class token queries every patch
                o.add_(_weighted(v, a, heads, o.shape))
        ctx.saved_projections = saved if save else None
        return out.permute(2, 1, 0)                                          # (B, N, C')

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        attn, xv, wv = ctx.saved_tensors
        layout, heads = ctx.layout, ctx.heads
        need = ctx.needs_input_grad
        v_side = _Side(_token_major(xv), wv, layout)
        v_side.start_grad(need[1], need[2])
        dtype = v_side.x.dtype if wv is None else torch.promote_types(xv.dtype, wv.dtype)
        dout = dout.to(dtype).permute(2, 1, 0).contiguous()                 # (C', N, B)
        weights = attn.to(dtype)
        new = torch.zeros_like if layout.causal else torch.empty_like    # causal: j > i unwritten
        dattn = new(attn) if need[0] else None
        saved = ctx.saved_projections
        for i, g in enumerate(_plan(layout)):
            if saved is None:
                v, xv_flat = v_side.project(g.k, g.slot_v)
            else:
                v, xv_flat = saved[i], _inputs(v_side, g.k)
            if isinstance(g, _Far):
                dv = (torch.zeros_like(v, memory_format=torch.contiguous_format)
                      if need[1] or need[2] else None)
                far.mix_grad(_heads_last(_cm_rows(dout, g.q), heads), weights, dattn, g,
                             _heads_last(v, heads), None if dv is None else _heads_last(dv, heads),
                             _far_step(heads, v.shape[0]))
                if dv is not None:
                    v_side.accumulate(g.k, g.slot_v, xv_flat, dv)
                continue
            go = _cm_rows(dout, g.q)                                        # (C', *q sizes, B)
            if dattn is not None:
                _pairs(dattn, g).copy_(_head_dot(go, v, heads, _score_dtype(go)))
            if need[1] or need[2]:
                v_side.accumulate(g.k, g.slot_v, xv_flat,
                                  _weighted(go, _pairs(weights, g).contiguous(), heads, v.shape))
        ctx.saved_projections = None
        dxv, dwv = v_side.finish_grad()
        return dattn, None if dxv is None else dxv.transpose(0, 1), dwv, None, None, None


class GroupedBackend(Backend):
    """Fast exact backend (the default): offset-grouped GEMMs, recompute in backward unless
    ``save_projections``."""

    name = "grouped"

    def not_supported_reasons(self, layout, x, weights) -> List[str]:
        if not hasattr(layout, "pair_groups"):
            return [f"layout {type(layout).__name__} does not enumerate pair groups"]
        return []

    @torch.compiler.disable
    def pair_scores(self, xq, xk, wq, wk, layout, heads, scale, save_projections=False):
        return _PairScores.apply(xq, xk, wq, wk, layout, heads, float(scale),
                                 bool(save_projections))

    @torch.compiler.disable
    def pair_mix(self, attn, xv, wv, layout, heads, save_projections=False):
        return _PairMix.apply(attn, xv, wv, layout, heads, bool(save_projections))
