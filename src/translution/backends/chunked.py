"""Chunked backend: pairs grouped by slot triple, several groups per batched GEMM.

Every attended pair ``(i, j)`` uses the weight triple ``(Wq[slot(i,j)], Wk[slot(j,i)],
Wv[slot(i,j)])``. Pairs sharing a triple form a *group* (on a regular grid: one relative offset,
or one class-token relation). Groups of similar size are padded to a common length and stacked
into *chunks*; each chunk's projections are one ``bmm`` of the gathered token rows with the
groups' slot matrices, so the Python work is per chunk rather than per offset. The working set
of a chunk is bounded (``chunk_elements``), so nothing of size ``N×N×C×C'`` or ``B×N×N×C'`` is
ever built: besides inputs, weights and one ``(B, heads, N, N)`` score tensor, memory is one
chunk's temporaries. Backward recomputes the projections chunk by chunk.

Padding rows point at an extra all-zero token (index ``N``), so their projections are zero and
contribute nothing; their scores go to a scratch cell (flat index ``N²``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from ..layouts import Layout
from .base import Backend


@dataclass(frozen=True)
class _Chunk:
    qi: torch.Tensor          # (G, n) query token of each row (N = padding)
    kj: torch.Tensor          # (G, n) key token of each row (N = padding)
    write: torch.Tensor       # (G·n,) flat pair index i·N + j (N² = padding scratch)
    read: torch.Tensor        # (G·n,) same, padding → 0 (any valid cell)
    slot_q: torch.Tensor      # (G,) slot of the query projection (= value slot)
    slot_k: torch.Tensor      # (G,) slot of the key projection


@functools.lru_cache(maxsize=64)
def _groups(layout: Layout) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                     torch.Tensor]:
    """Pairs sorted by slot triple: ``(i, j, group start offsets, slot_q, slot_k)``."""
    n = layout.num_tokens
    sq, sk = layout.slot_index(), layout.key_slot_index()
    allowed = layout.allowed()
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = torch.ones(n, n, dtype=torch.bool) if allowed is None else allowed
    i, j, sq, sk = i[keep], j[keep], sq[keep], sk[keep]
    key = sq * layout.num_slots + sk
    order = torch.argsort(key, stable=True)
    i, j, key = i[order], j[order], key[order]
    _, counts = torch.unique_consecutive(key, return_counts=True)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    first = starts[:-1]
    return i, j, starts, sq[order][first], sk[order][first]


@functools.lru_cache(maxsize=256)
def _plan(layout: Layout, max_rows: int) -> List[_Chunk]:
    """Chunks of groups, each at most ``max_rows`` padded rows (or one group if larger)."""
    i, j, starts, slot_q, slot_k = _groups(layout)
    n_tok = layout.num_tokens
    sizes = (starts[1:] - starts[:-1]).tolist()
    order = sorted(range(len(sizes)), key=lambda g: -sizes[g])
    chunks, current = [], []
    for g in order:
        width = sizes[current[0]] if current else sizes[g]          # sorted: first is largest
        if current and width * (len(current) + 1) > max_rows:
            chunks.append(current)
            current = []
        current.append(g)
    if current:
        chunks.append(current)
    plan = []
    for members in chunks:
        width = sizes[members[0]]
        qi = torch.full((len(members), width), n_tok, dtype=torch.long)
        kj = torch.full_like(qi, n_tok)
        for row, g in enumerate(members):
            lo, hi = starts[g].item(), starts[g + 1].item()
            qi[row, :hi - lo], kj[row, :hi - lo] = i[lo:hi], j[lo:hi]
        pad = qi == n_tok
        flat = qi * n_tok + kj
        plan.append(_Chunk(qi, kj, flat.masked_fill(pad, n_tok * n_tok).flatten(),
                           flat.masked_fill(pad, 0).flatten(),
                           slot_q[members], slot_k[members]))
    return plan


#: Elements allowed in one chunk temporary (at least 8 activation tensors' worth).
MIN_CHUNK_ELEMENTS = 1 << 22


def _chunks(layout: Layout, batch: int, width: int, device) -> List[_Chunk]:
    budget = max(MIN_CHUNK_ELEMENTS, 8 * batch * layout.num_tokens * width)
    plan = _plan(layout, max(1, budget // (batch * width)))
    if device.type != "cpu":
        plan = [_Chunk(*(t.to(device) for t in (c.qi, c.kj, c.write, c.read, c.slot_q,
                                                 c.slot_k))) for c in plan]
    return plan


class _Side:
    """One projection: input rows ``x_t (N+1, B, C)`` (token-major, zero padding row) and a
    weight that is a bank (relative), a plain matrix, or ``None`` (identity)."""

    def __init__(self, x: torch.Tensor, w: Optional[torch.Tensor]):
        self.x, self.w = x, w
        self.relative = w is not None and w.dim() == 3
        x_t = _token_major(x)                                          # (N+1, B, C)
        if self.relative:
            self.rows = x_t
        else:
            self.rows = x_t if w is None else x_t @ w                  # (N+1, B, C')

    def project(self, tokens: torch.Tensor, slots: torch.Tensor):
        """Rows for ``tokens (G, n)`` → ``(G, n, B, C')`` and the gathered inputs (banks)."""
        g, n = tokens.shape
        gathered = self.rows[tokens.flatten()]                         # (G·n, B, F)
        if not self.relative:
            return gathered.view(g, n, *gathered.shape[1:]), None
        x_rows = gathered.view(g, -1, gathered.shape[-1])              # (G, n·B, C)
        out = torch.bmm(x_rows, self.w[slots])                         # (G, n·B, C')
        return out.view(g, n, -1, out.shape[-1]), x_rows

    def start_grad(self, need_x: bool, need_w: bool):
        self.need_x, self.need_w = need_x, need_w
        shape = self.rows.shape[:-1] + ((self.x.shape[-1],) if self.relative else
                                        (self.rows.shape[-1],))
        self.d_rows = torch.zeros(shape, dtype=self.rows.dtype, device=self.rows.device) \
            if (need_x or (need_w and not self.relative)) else None
        self.dw = torch.zeros_like(self.w) if (need_w and self.relative) else None

    def accumulate(self, tokens, slots, x_rows, dproj: torch.Tensor):
        """Add ``dproj (G, n, B, C')``, the gradient of this chunk's projections."""
        g = tokens.shape[0]
        flat = tokens.flatten()
        if not self.relative:
            if self.d_rows is not None:
                self.d_rows.index_add_(0, flat, dproj.reshape(-1, *dproj.shape[2:]))
            return
        d = dproj.reshape(g, -1, dproj.shape[-1])                      # (G, n·B, C')
        if self.dw is not None:
            self.dw.index_add_(0, slots, torch.bmm(x_rows.transpose(1, 2), d))
        if self.d_rows is not None:
            dx = torch.bmm(d, self.w[slots].transpose(1, 2))           # (G, n·B, C)
            self.d_rows.index_add_(0, flat, dx.view(-1, *self.d_rows.shape[1:]))

    def finish_grad(self):
        dx, dw = None, self.dw
        if self.d_rows is not None:
            d = self.d_rows[:-1].transpose(0, 1)                       # (B, N, F)
            if self.relative or self.w is None:
                dx = d if self.need_x else None
            else:
                if self.need_w:
                    dw = self.x.reshape(-1, self.x.shape[-1]).t() @ d.reshape(-1, d.shape[-1])
                if self.need_x:
                    dx = d @ self.w.t()
        return (dx.contiguous() if dx is not None else None), dw


def _token_major(x: torch.Tensor) -> torch.Tensor:
    """``(B, N, C) -> (N+1, B, C)`` with a zero padding token last."""
    b, n, c = x.shape
    out = x.new_zeros(n + 1, b, c)
    out[:n] = x.transpose(0, 1)
    return out


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.unflatten(-1, (heads, t.shape[-1] // heads))


def _pair_rows(t: torch.Tensor, index: torch.Tensor, shape) -> torch.Tensor:
    """``(B, heads, N, N)`` at flat pair ``index (G·n,)`` → ``(G, n, B, heads)``."""
    b, h = t.shape[:2]
    picked = t.reshape(b, h, -1)[:, :, index]                          # (B, h, G·n)
    return picked.permute(2, 0, 1).reshape(*shape, b, h)


class _PairScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xq, xk, wq, wk, layout, heads, scale):
        ctx.save_for_backward(xq, xk, wq, wk)
        ctx.layout, ctx.heads, ctx.scale = layout, heads, scale
        q_side, k_side = _Side(xq, wq), _Side(xk, wk)
        b, n = xq.shape[:2]
        dtype = torch.promote_types(xq.dtype, torch.float32)
        width = max(q_side.rows.shape[-1], xq.shape[-1])
        fill = float("-inf") if layout.causal else 0.0
        scores = torch.full((b, heads, n * n + 1), fill, dtype=dtype, device=xq.device)
        for c in _chunks(layout, b, width, xq.device):
            q, _ = q_side.project(c.qi, c.slot_q)
            k, _ = k_side.project(c.kj, c.slot_k)
            s = torch.linalg.vecdot(_heads(q, heads), _heads(k, heads))   # (G, n, B, h)
            scores.index_copy_(2, c.write, (s.to(dtype) * scale).flatten(0, 1).permute(1, 2, 0))
        return scores[:, :, :n * n].view(b, heads, n, n)

    @staticmethod
    @once_differentiable
    def backward(ctx, dscores):
        xq, xk, wq, wk = ctx.saved_tensors
        layout, heads, scale = ctx.layout, ctx.heads, ctx.scale
        need = ctx.needs_input_grad
        q_side, k_side = _Side(xq, wq), _Side(xk, wk)
        q_side.start_grad(need[0], need[2])
        k_side.start_grad(need[1], need[3])
        b = xq.shape[0]
        width = max(q_side.rows.shape[-1], xq.shape[-1])
        for c in _chunks(layout, b, width, xq.device):
            q, xq_rows = q_side.project(c.qi, c.slot_q)
            k, xk_rows = k_side.project(c.kj, c.slot_k)
            g = (_pair_rows(dscores, c.read, c.qi.shape) * scale).to(q.dtype)[..., None]
            q, k = _heads(q, heads), _heads(k, heads)
            if need[0] or need[2]:
                q_side.accumulate(c.qi, c.slot_q, xq_rows, (g * k).flatten(-2))
            if need[1] or need[3]:
                k_side.accumulate(c.kj, c.slot_k, xk_rows, (g * q).flatten(-2))
        dxq, dwq = q_side.finish_grad()
        dxk, dwk = k_side.finish_grad()
        return dxq, dxk, dwq, dwk, None, None, None


class _PairMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn, xv, wv, layout, heads):
        ctx.save_for_backward(attn, xv, wv)
        ctx.layout, ctx.heads = layout, heads
        v_side = _Side(xv, wv)
        b, n = xv.shape[:2]
        width = v_side.rows.shape[-1] if wv is None or wv.dim() == 2 else wv.shape[-1]
        out = torch.zeros(n + 1, b, width, dtype=xv.dtype, device=xv.device)
        for c in _chunks(layout, b, max(width, xv.shape[-1]), xv.device):
            v, _ = v_side.project(c.kj, c.slot_q)                     # value slot = query slot
            a = _pair_rows(attn, c.read, c.qi.shape).to(v.dtype)[..., None]
            contrib = (a * _heads(v, heads)).flatten(-2)               # (G, n, B, C')
            out.index_add_(0, c.qi.flatten(), contrib.flatten(0, 1))
        return out[:n].transpose(0, 1).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        attn, xv, wv = ctx.saved_tensors
        layout, heads = ctx.layout, ctx.heads
        need = ctx.needs_input_grad
        v_side = _Side(xv, wv)
        v_side.start_grad(need[1], need[2])
        b, n = xv.shape[:2]
        width = dout.shape[-1]
        dout_t = _token_major(dout.to(v_side.rows.dtype))             # (N+1, B, C')
        dattn = torch.zeros(b, heads, n * n + 1, dtype=attn.dtype, device=attn.device) \
            if need[0] else None
        for c in _chunks(layout, b, max(width, xv.shape[-1]), xv.device):
            v, xv_rows = v_side.project(c.kj, c.slot_q)
            v = _heads(v, heads)
            go = _heads(dout_t[c.qi.flatten()].view(*c.qi.shape, b, width), heads)
            if dattn is not None:
                da = torch.linalg.vecdot(go, v).to(attn.dtype)         # (G, n, B, h)
                dattn.index_copy_(2, c.write, da.flatten(0, 1).permute(1, 2, 0))
            if need[1] or need[2]:
                a = _pair_rows(attn, c.read, c.qi.shape).to(v.dtype)[..., None]
                v_side.accumulate(c.kj, c.slot_q, xv_rows, (a * go).flatten(-2))
        dxv, dwv = v_side.finish_grad()
        dattn = None if dattn is None else dattn[:, :, :n * n].view(b, heads, n, n)
        return dattn, dxv, dwv, None, None


class ChunkedBackend(Backend):
    """Fast exact backend: slot-triple groups, chunked batched GEMMs, recompute in backward."""

    name = "chunked"

    def pair_scores(self, xq, xk, wq, wk, layout, heads, scale):
        return _PairScores.apply(xq, xk, wq, wk, layout, heads, float(scale))

    def pair_mix(self, attn, xv, wv, layout, heads):
        return _PairMix.apply(attn, xv, wv, layout, heads)
