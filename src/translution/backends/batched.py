"""Batched backend: pairs grouped by slot, a few batched GEMMs per call (for GPUs and α).

Every attended pair ``(i, j)`` uses the slots ``(slot(i,j), key slot)`` of
:meth:`~translution.layouts.Layout.slot_index` and
:meth:`~translution.layouts.Layout.key_slot_index`
(the value uses ``slot(i,j)``). Pairs sharing both slots form a *group*; groups are cut into
*tiles* of at most ``tile_rows`` pairs, tiles are sorted by size and packed into *chunks*, and
each chunk is computed by a fixed handful of ops whatever its number of tiles:

* gather the chunk's query / key token rows with one ``index_select`` (a static index tensor,
  cached per layout and device) and the tiles' slot matrices with another;
* one ``bmm`` per projection: ``(tiles, rows·B, C) @ (tiles, C, C')``;
* per-head dot products (scores) or weighted rows (mix), written back with ``index_copy_`` /
  ``index_add_``. On CPUs, heads of fewer than 16 features (α-Translution's ``R/heads``) form
  the scores feature-major ``(tiles, C', rows·B)`` (the same ``bmm``, written transposed) and
  spread / sum per-head values with small GEMMs: broadcasts over 8-float rows are ~4× slower.

Tiles shorter than their chunk's longest are padded with an extra all-zero token (index ``N``),
whose projections are zero; its scores go to a scratch pair (flat index ``N²``). The number of
chunks, hence of ops, depends on the memory budget, not on the number of slots. Nothing of size
``N×N×C×C'`` or ``B×N×N×C'`` is built: besides inputs, weights and ``(B, heads, N, N)`` score
tensors, the working set is one chunk's temporaries (about ``memory_budget`` bytes). Backward
recomputes the projections chunk by chunk (``save_projections=True`` keeps them instead). On
CPUs, chunk temporaries reuse the same buffers from chunk to chunk. The slot map is read only
through the layout's index maps, so any layout (clipped, symmetric, causal, class token,
circular) runs unchanged.

The far slot of a clipped 1-D layout (``|δ| > K``) is left out of the chunks: each direction's
tokens are projected once through it and its triangle of pairs is scored / mixed by per-head
matmuls over blocks of queries (:mod:`translution.backends.far`), a few ops per block.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from ..layouts import Layout
from . import far
from .base import Backend

#: Default bound on one chunk temporary, in bytes, per device type: cache-sized chunks are
#: fastest on CPUs; on GPUs large chunks mean few kernel launches.
DEFAULT_MEMORY_BUDGET = {"cpu": 512 << 10, "cuda": 256 << 20}
OTHER_DEVICES_MEMORY_BUDGET = 64 << 20
#: On CPUs, banks of at most this many entries per slot (α-Translution's R×R) do little
#: arithmetic per byte; their default budget is doubled, which halves the ops per call.
NARROW_BANK = 32 * 32


@dataclass(frozen=True)
class _Chunk:
    """Tiles of equal padded length ``rows``; index tensors have ``tiles·rows`` entries."""

    tiles: int
    rows: int
    q_tok: torch.Tensor       # query token of each row (N = padding)
    k_tok: torch.Tensor       # key token of each row (N = padding)
    pair: torch.Tensor        # flat pair index i·N + j (N² = padding scratch)
    slot_q: torch.Tensor      # (tiles,) slot of the query and value projections
    slot_k: torch.Tensor      # (tiles,) slot of the key projection

    def to(self, device: torch.device) -> "_Chunk":
        return _Chunk(self.tiles, self.rows, *(t.to(device) for t in (
            self.q_tok, self.k_tok, self.pair, self.slot_q, self.slot_k)))


@functools.lru_cache(maxsize=64)
def _groups(layout: Layout) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                     List[int]]:
    """Attended pairs but the far ones (see :mod:`~translution.backends.far`), sorted by their
    slots ``(slot_q, slot_k)``: query and key tokens, the two slots per pair, and the size of
    each run of equal slots (a group)."""
    n = layout.num_tokens
    slot_q, slot_k = layout.slot_index(), layout.key_slot_index()
    allowed = layout.allowed()
    keep = torch.ones(n, n, dtype=torch.bool) if allowed is None else allowed.clone()
    for f in far.far_pairs(layout):
        tri = torch.ones(f.m, f.m, dtype=torch.bool)
        keep[f.q0:f.q0 + f.m, f.k0:f.k0 + f.m] &= ~(tri.tril() if f.lower else tri.triu())
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    i, j, slot_q, slot_k = i[keep], j[keep], slot_q[keep], slot_k[keep]
    key = (slot_q * layout.num_slots + slot_k).flatten()
    order = torch.argsort(key, stable=True)
    _, counts = torch.unique_consecutive(key[order], return_counts=True)
    return (i.flatten()[order], j.flatten()[order], slot_q.flatten()[order],
            slot_k.flatten()[order], counts.tolist())


@functools.lru_cache(maxsize=64)
def _tiles(layout: Layout, tile_rows: int) -> List[Tuple[torch.Tensor, torch.Tensor, int, int]]:
    """Groups cut into tiles of at most ``tile_rows`` pairs, longest first:
    ``(query tokens, key tokens, slot_q, slot_k)`` per tile."""
    i, j, slot_q, slot_k, counts = _groups(layout)
    tiles, start = [], 0
    for count in counts:
        for lo in range(start, start + count, tile_rows):
            hi = min(lo + tile_rows, start + count)
            tiles.append((i[lo:hi], j[lo:hi], int(slot_q[lo]), int(slot_k[lo])))
        start += count
    tiles.sort(key=lambda t: -len(t[0]))
    return tiles


def _split(sizes: List[int], row_cost: int, tile_cost: int,
           budget: int) -> Tuple[float, List[int]]:
    """Chunk boundaries for tiles of ``sizes`` (longest first), each chunk within ``budget``,
    that minimise the estimated cost in rows: padded rows, plus a tile's slot matrix per tile,
    plus a fixed cost per chunk (taken as a quarter budget of rows). Dynamic programming over
    the sorted tiles; returns ``(cost, boundaries)``."""
    overhead, per_tile = budget / 4 / row_cost, tile_cost / row_cost
    count = len(sizes)
    best = torch.full((count + 1,), float("inf"), dtype=torch.float64)
    best[0] = 0.0
    start = torch.zeros(count + 1, dtype=torch.long)
    steps = torch.arange(1, count + 1, dtype=torch.float64)
    for a in range(count):                   # best[a] is final: relax every chunk [a, b)
        longest = max(1, min(_MAX_TILES, budget // max(sizes[a] * row_cost, tile_cost, 1)))
        hi = min(count, a + longest)
        cost = best[a] + overhead + steps[:hi - a] * (sizes[a] + per_tile)
        better = cost < best[a + 1:hi + 1]
        best[a + 1:hi + 1][better] = cost[better]
        start[a + 1:hi + 1][better] = a
    start = start.tolist()
    bounds = [count]
    while bounds[-1] > 0:
        bounds.append(start[bounds[-1]])
    return float(best[count]), bounds[::-1]


_MAX_TILES = 1024          # tiles per chunk (bounds the planning work)
_MAX_SPLIT_TILES = 4096    # groups are cut into smaller tiles only up to this many tiles


@functools.lru_cache(maxsize=64)
def _plan(layout: Layout, tile_rows: Optional[int], row_cost: int, tile_cost: int,
          budget: int) -> List[_Chunk]:
    """Chunks of tiles of at most ``tile_rows`` pairs (``None``: the cheapest of a few sizes),
    each within ``budget`` bytes: ``tiles · rows · row_cost`` and ``tiles · tile_cost`` (at least
    one tile per chunk)."""
    n = layout.num_tokens
    counts = _groups(layout)[4]
    candidates = [tile_rows] if tile_rows else [n] + [        # split only small layouts' groups
        r for r in (32, 16, 8) if r < n and sum(-(-c // r) for c in counts) <= _MAX_SPLIT_TILES]
    options = []
    for rows in candidates:
        tiles = _tiles(layout, rows)
        cost, bounds = _split([len(t[0]) for t in tiles], row_cost, tile_cost, budget)
        options.append((cost, rows, tiles, bounds))
    _, _, tiles, bounds = min(options, key=lambda o: o[:2])
    groups = [tiles[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    chunks = []
    for members in groups:
        rows = len(members[0][0])
        q_tok = torch.full((len(members), rows), n, dtype=torch.long)
        k_tok = torch.full_like(q_tok, n)
        for t, (qi, kj, _, _) in enumerate(members):
            q_tok[t, :len(qi)], k_tok[t, :len(kj)] = qi, kj
        pad = q_tok == n
        pair = (q_tok * n + k_tok).masked_fill_(pad, n * n)
        chunks.append(_Chunk(len(members), rows, q_tok.flatten(), k_tok.flatten(), pair.flatten(),
                             torch.tensor([m[2] for m in members]),
                             torch.tensor([m[3] for m in members])))
    return chunks


@functools.lru_cache(maxsize=64)
def _device_plan(device: torch.device, *key) -> List[_Chunk]:
    """:func:`_plan` ``(*key)`` with its index tensors on ``device`` (cached per device)."""
    plan = _plan(*key)
    return plan if device.type == "cpu" else [c.to(device) for c in plan]


def _take(t: torch.Tensor, index) -> torch.Tensor:
    """Rows ``index`` (a slice: a view, or an index tensor) of ``t``."""
    return t[index] if isinstance(index, slice) else t.index_select(0, index)


def _add_at(t: torch.Tensor, index, src: torch.Tensor):
    """Add ``src`` (reshaped to them) to the rows ``index`` (a slice or an index tensor) of
    ``t``."""
    if isinstance(index, slice):
        rows = t[index]
        rows += src.reshape(rows.shape)
    else:
        t.index_add_(0, index, src.reshape(len(index), *t.shape[1:]))


def _token_major(x: torch.Tensor) -> torch.Tensor:
    """``(B, N, F) -> (N+1, B, F)`` with an all-zero padding token last."""
    b, n, f = x.shape
    out = x.new_zeros(n + 1, b, f)
    out[:n] = x.transpose(0, 1)
    return out


def _pair_major(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, heads, N, N) -> (N²+1, B, heads)`` with an all-zero scratch pair last."""
    b, h, n, _ = t.shape
    out = torch.empty(n * n + 1, b, h, dtype=dtype, device=t.device)
    out[:n * n].view(n * n, b * h).copy_(t.reshape(b * h, n * n).t())   # 2-D: blocked on CPUs
    out[n * n].zero_()
    return out


def _from_pair_major(t: torch.Tensor, n: int) -> torch.Tensor:
    """``(N²+1, B, heads) -> (B, heads, N, N)`` (contiguous)."""
    b, h = t.shape[1:]
    out = torch.empty(b, h, n, n, dtype=t.dtype, device=t.device)
    out.view(b * h, n * n).copy_(t[:n * n].view(n * n, b * h).t())
    return out


class _Side:
    """One projection: its input as token-major rows ``(N+1, B, ·)`` and its weight (a bank,
    a plain matrix or ``None`` = identity), with gradient accumulators. Chunk temporaries are
    written into buffers reused by every chunk of the call (fresh allocations of this size are
    page-faulted in again and again on CPUs), unless ``keep``: projections kept for backward."""

    def __init__(self, x: torch.Tensor, w: Optional[torch.Tensor], keep: bool = False):
        self.x, self.w, self.keep, self._buffers, self._views = x, w, keep, {}, {}
        self.relative = w is not None and w.dim() == 3
        x_t = _token_major(x)                                          # (N+1, B, C)
        self.rows = x_t if (w is None or self.relative) else x_t @ w   # plain: (N+1, B, C')
        self.width = self.rows.shape[-1] if not self.relative else w.shape[-1]

    def buffer(self, name: str, *shape: int) -> Optional[torch.Tensor]:
        """On CPUs, a contiguous ``shape`` tensor of the rows' dtype for one chunk's ``name``
        temporary, the same memory for every chunk of this call; ``None`` (the op allocates)
        when projections are kept or on other devices (their caching allocators reuse memory)."""
        if self.keep or self.rows.device.type != "cpu":
            return None
        view = self._views.get((name, shape))           # chunks of one plan repeat shapes
        if view is None:
            size, buf = math.prod(shape), self._buffers.get(name)
            if buf is None or buf.numel() < size:
                buf = self._buffers[name] = torch.empty(size, dtype=self.rows.dtype)
                self._views = {k: v for k, v in self._views.items() if k[0] != name}
            view = self._views[name, shape] = buf[:size].view(shape)
        return view

    def gather(self, tokens, slots, tiles: int):
        """The rows of ``tokens`` ``(tiles, rows·B, F)`` and, for banks, the slot matrices
        ``(tiles, C, C')`` (``tokens``, ``slots``: index tensors, or slices for one tile)."""
        if isinstance(tokens, slice):
            gathered = self.rows[tokens]                              # (tiles·rows, B, F)
        else:
            gathered = torch.index_select(self.rows, 0, tokens, out=self.buffer(
                "rows", len(tokens), *self.rows.shape[1:]))
        rows, batch, width = gathered.shape
        flat = gathered.view(tiles, rows // tiles * batch, width)
        return flat, (_take(self.w, slots) if self.relative else None)

    def project(self, tokens, slots, tiles: int, feature_major: bool = False):
        """Rows of ``tokens`` projected, ``(tiles, rows·B, C')`` — or with ``feature_major``
        ``(tiles, C', rows·B)``, where per-head products and sums run along rows instead of
        ``C'/heads`` features (contiguous for banks, a view otherwise) — and for banks what
        :meth:`gather` gave: the inputs ``(tiles, rows·B, C)`` and slot matrices."""
        flat, mats = self.gather(tokens, slots, tiles)
        if not self.relative:
            return (flat.transpose(1, 2) if feature_major else flat), None, None
        rows, c_out = flat.shape[1], mats.shape[-1]
        if feature_major:                 # the same product, written transposed
            out = self.buffer("proj", tiles, c_out, rows)
            return torch.bmm(mats.transpose(1, 2), flat.transpose(1, 2), out=out), flat, mats
        return torch.bmm(flat, mats, out=self.buffer("proj", tiles, rows, c_out)), flat, mats

    def start_grad(self, need_x: bool, need_w: bool):
        self.need_x, self.need_w = need_x, need_w
        self.d_rows = (torch.zeros_like(self.rows) if need_x or (need_w and not self.relative)
                       else None)
        self.dw = torch.zeros_like(self.w) if (need_w and self.relative) else None

    def accumulate(self, tokens, slots, x_rows, mats, dproj: torch.Tensor):
        """Add ``dproj`` ``(tiles, rows·B, C')`` (any strides), the gradient of
        :meth:`project`'s output (``x_rows``, ``mats``: what :meth:`project` gathered)."""
        if not self.relative:
            if self.d_rows is not None:
                _add_at(self.d_rows, tokens, dproj)
            return
        if self.dw is not None:
            _add_at(self.dw, slots, torch.bmm(x_rows.transpose(1, 2), dproj))
        if self.d_rows is not None:
            dx = self.buffer("dx", *dproj.shape[:2], mats.shape[1])
            _add_at(self.d_rows, tokens, torch.bmm(dproj, mats.transpose(1, 2), out=dx))

    def finish_grad(self) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        dx, dw = None, self.dw
        if self.d_rows is not None:
            d = self.d_rows[:-1].transpose(0, 1)                       # (B, N, F)
            if self.relative or self.w is None:
                dx = d.contiguous() if self.need_x else None
            else:
                if self.need_w:
                    dw = self.x.reshape(-1, self.x.shape[-1]).t() @ d.reshape(-1, d.shape[-1])
                if self.need_x:
                    dx = d @ self.w.t()
        return dx, dw


def _feature_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """A chunk's feature-major ``(tiles, C', rows·B)`` as ``(tiles, heads, C'/heads, rows·B)``."""
    return t.unflatten(1, (heads, -1))


def _pairs_to_tiles(t: torch.Tensor, c: _Chunk) -> torch.Tensor:
    """Per-head values of a chunk's pairs, ``(tiles·rows, B, heads)`` → ``(tiles, heads,
    rows·B)`` (a view)."""
    return t.view(c.tiles, -1, t.shape[-1]).transpose(1, 2)


def _tiles_to_pairs(t: torch.Tensor, c: _Chunk) -> torch.Tensor:
    """The inverse of :func:`_pairs_to_tiles` (contiguous)."""
    return t.transpose(1, 2).reshape(c.tiles * c.rows, -1, t.shape[1])


@functools.lru_cache(maxsize=64)
def _head_indicator(heads: int, width: int, dtype: torch.dtype, device: torch.device):
    """``(heads, width)`` 0/1: row ``h`` marks head ``h``'s ``width/heads`` features."""
    return torch.eye(heads, dtype=dtype, device=device).repeat_interleave(width // heads, 1)


#: On CPUs, heads narrower than this many features take the paths below: elementwise kernels
#: broadcast over, or reduce along, such short rows several times slower (at 8 features, a
#: quarter of the speed). Other devices keep the plain broadcasts (fewer kernels).
_SHORT_HEAD = 16


def _short_heads(width: int, heads: int, device: torch.device) -> bool:
    return device.type == "cpu" and width // heads < _SHORT_HEAD


def _scale_heads_(t: torch.Tensor, a: torch.Tensor, side: Optional[_Side] = None) -> torch.Tensor:
    """``t`` ``(..., C')`` with each head's features times its value in ``a`` ``(..., heads)``,
    in place. For short heads the factors are first spread to ``C'`` by a product with the 0/1
    :func:`_head_indicator` (exact), into ``side``'s reused buffer when given."""
    heads, width = a.shape[-1], t.shape[-1]
    if not _short_heads(width, heads, t.device):
        t.unflatten(-1, (heads, -1)).mul_(a.reshape(*t.shape[:-1], heads, 1))
        return t
    out = (side.buffer("spread", math.prod(t.shape[:-1]), width)
           if side is not None and a.dtype == t.dtype else None)
    spread = torch.mm(a.reshape(-1, heads), _head_indicator(heads, width, a.dtype, a.device),
                      out=out)
    return t.mul_(spread.view(t.shape))


def _head_dots(t: torch.Tensor, u: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """Per-head dot products of ``t`` and ``u`` ``(..., C')``, ``(..., heads)`` in ``dtype``
    (``t`` is overwritten). On CPUs the sums are one matrix-vector product: as fast as ``sum``
    for 64-feature heads, faster for narrower ones (16 features: ~25 %)."""
    prod = t.mul_(u).to(dtype).unflatten(-1, (heads, -1))
    if t.device.type != "cpu":
        return prod.sum(-1)
    return prod @ _head_indicator(1, prod.shape[-1], prod.dtype, prod.device)[0]


def _pair_dots(q: torch.Tensor, k: torch.Tensor, c: _Chunk, heads: int,
               feature_major: bool) -> torch.Tensor:
    """Per-head ``<q, k>`` of a chunk's pairs, ``(tiles·rows, B, heads)`` in ``q``'s dtype
    (``q`` is overwritten); ``q``, ``k`` as :meth:`_Side.project` gave them."""
    if feature_major:
        return _tiles_to_pairs(_feature_heads(q, heads).mul_(_feature_heads(k, heads)).sum(2), c)
    return _head_dots(q, k, heads, q.dtype).view(c.tiles * c.rows, -1, heads)


def _pair_scale_(t: torch.Tensor, g: torch.Tensor, feature_major: bool) -> torch.Tensor:
    """A chunk's projections ``t`` (as :meth:`_Side.project` gave them) times per-head ``g``,
    in place: pair-major ``(tiles·rows, B, heads)``, or ``(tiles, heads, rows·B)`` when
    ``feature_major``. Returns ``t`` as ``(tiles, rows·B, C')`` (a view)."""
    if feature_major:
        _feature_heads(t, g.shape[1]).mul_(g.unsqueeze(2))
        return t.transpose(1, 2)
    return _scale_heads_(t, g)


class BatchedBackend(Backend):
    """Exact backend with a slot-independent number of ops: tiles of pairs sharing their slots,
    chunked batched GEMMs, recompute in backward (the default on CUDA).

    Args:
        memory_budget: bytes one chunk temporary may take (bounds the working set); ``None``:
            :data:`DEFAULT_MEMORY_BUDGET` for the inputs' device type (twice that for
            :data:`NARROW_BANK` banks on CPUs).
        tile_rows: most pairs per tile (``None``: a group is one tile).
    """

    name = "batched"

    def __init__(self, memory_budget: Optional[int] = None, tile_rows: Optional[int] = None):
        if memory_budget is not None and (isinstance(memory_budget, bool)
                                          or not isinstance(memory_budget, int)
                                          or memory_budget < 1):
            raise ValueError(f"memory_budget must be None or a positive number of bytes, "
                             f"got {memory_budget!r}")
        if tile_rows is not None and (isinstance(tile_rows, bool) or not isinstance(tile_rows, int)
                                      or tile_rows < 1):
            raise ValueError(f"tile_rows must be None or a positive int, got {tile_rows!r}")
        self.memory_budget, self.tile_rows = memory_budget, tile_rows

    def plan(self, layout: Layout, batch: int, c_in: int, c_out: int, itemsize: int,
             device: torch.device) -> List[_Chunk]:
        """The chunks for inputs of ``batch × c_in`` channels projected to ``c_out``: no chunk
        temporary (``rows·B·C`` gathered inputs or ``rows·B·C'`` projections, ``C×C'`` slot
        matrices per tile) exceeds :attr:`memory_budget` bytes, unless one tile alone does."""
        itemsize = max(itemsize, 4)                    # scores are formed in float32 or wider
        row_cost = max(1, batch) * max(1, c_in, c_out) * itemsize
        tile_cost = max(1, c_in) * max(1, c_out) * itemsize
        narrow = c_in * c_out <= NARROW_BANK and device.type == "cpu" and not self.memory_budget
        return _device_plan(device, layout, self.tile_rows, row_cost, tile_cost,
                            self._budget(device) * (2 if narrow else 1))

    def _budget(self, device: torch.device) -> int:
        return self.memory_budget or DEFAULT_MEMORY_BUDGET.get(device.type,
                                                               OTHER_DEVICES_MEMORY_BUDGET)

    def far_step(self, batch: int, heads: int, m: int, device: torch.device) -> int:
        """Queries per far block: its ``(B, heads, step, m)`` scores (float32 or wider, 8 bytes
        assumed) within :attr:`memory_budget`, and at least 32."""
        return max(32, self._budget(device) // (8 * max(1, batch * heads * m)))

    @torch.compiler.disable
    def pair_scores(self, xq, xk, wq, wk, layout, heads, scale, save_projections: bool = False):
        """See :mod:`translution.backends.base`. ``save_projections`` keeps every chunk's
        projections for backward (not the far pairs': those are per token, cheap)."""
        return _PairScores.apply(xq, xk, wq, wk, layout, heads, float(scale), self,
                                 bool(save_projections))

    @torch.compiler.disable
    def pair_mix(self, attn, xv, wv, layout, heads, save_projections: bool = False):
        """See :mod:`translution.backends.base` (``save_projections``: as in
        :meth:`pair_scores`)."""
        return _PairMix.apply(attn, xv, wv, layout, heads, self, bool(save_projections))


def _far_project(side: _Side, first: int, slot: int, f: far.Far, batch: int, heads: int):
    """Tokens ``first … first+m-1`` of a far group through ``slot``: ``(tokens, slots)`` as
    slices, :meth:`_Side.project`'s triple and the projection head-last
    ``(B, heads, m, C'/heads)``."""
    tokens, slots = slice(first, first + f.m), slice(slot, slot + 1)
    proj = side.project(tokens, slots, 1)
    return (tokens, slots), proj, _heads_last(proj[0], batch, heads)


def _heads_last(t: Optional[torch.Tensor], batch: int, heads: int) -> Optional[torch.Tensor]:
    """Token-major ``(m·B, C')`` rows (any leading shape) → ``(B, heads, m, C'/heads)``."""
    if t is None:
        return None
    return t.view(-1, batch, heads, t.shape[-1] // heads).permute(1, 2, 0, 3)


def _far_scores(out, q_side, k_side, layout, heads, scale, backend):
    """Write the far pairs' scores into ``out`` ``(B, heads, N, N)``."""
    b = out.shape[0]
    for f in far.far_pairs(layout):
        qh, kh = (_far_project(side, first, slot, f, b, heads)[2].to(out.dtype) for
                  side, first, slot in ((q_side, f.q0, f.slot_q), (k_side, f.k0, f.slot_k)))
        far.scores(out, f, qh, kh, backend.far_step(b, heads, f.m, out.device), scale)


def _far_scores_grad(dscores, q_side, k_side, layout, heads, scale, backend):
    """Accumulate the far pairs' gradients into ``q_side`` / ``k_side``."""
    if not far.far_pairs(layout):
        return                                    # no N×N dtype copy for unclipped layouts
    b, dscores = dscores.shape[0], dscores.to(q_side.rows.dtype)
    for f in far.far_pairs(layout):
        qi, (q, xq, mq), qh = _far_project(q_side, f.q0, f.slot_q, f, b, heads)
        ki, (k, xk, mk), kh = _far_project(k_side, f.k0, f.slot_k, f, b, heads)
        dq = torch.zeros_like(q) if q_side.d_rows is not None or q_side.dw is not None else None
        dk = torch.zeros_like(k) if k_side.d_rows is not None or k_side.dw is not None else None
        far.scores_grad(dscores, f, qh, kh, _heads_last(dq, b, heads), _heads_last(dk, b, heads),
                        backend.far_step(b, heads, f.m, dscores.device), scale)
        if dq is not None:
            q_side.accumulate(*qi, xq, mq, dq)
        if dk is not None:
            k_side.accumulate(*ki, xk, mk, dk)


def _widths(x: torch.Tensor, *weights) -> Tuple[int, int]:
    c_out = max([x.shape[-1]] + [w.shape[-1] for w in weights if w is not None])
    return x.shape[-1], c_out


class _PairScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xq, xk, wq, wk, layout, heads, scale, backend, save):
        ctx.save_for_backward(xq, xk, wq, wk)
        ctx.layout, ctx.heads, ctx.scale, ctx.backend = layout, heads, scale, backend
        b, n = xq.shape[:2]
        q_side, k_side = _Side(xq, wq, save), _Side(xk, wk, save)
        dtype = torch.promote_types(q_side.rows.dtype, torch.float32)
        fill = float("-inf") if layout.causal else 0.0
        scores = torch.full((n * n + 1, b, heads), fill, dtype=dtype, device=xq.device)
        fm = _short_heads(q_side.width, heads, xq.device)   # scores feature-major: faster there
        ctx.saved_projections = [] if save else None
        for c in backend.plan(layout, b, *_widths(xq, wq, wk), xq.element_size(), xq.device):
            q, _, _ = q_side.project(c.q_tok, c.slot_q, c.tiles, fm)
            k, _, _ = k_side.project(c.k_tok, c.slot_k, c.tiles, fm)
            if save:
                ctx.saved_projections.append((q, k))
                q = q.clone()                                           # _pair_dots writes it
            s = _pair_dots(q.to(dtype), k, c, heads, fm)                # (tiles·rows, B, heads)
            scores.index_copy_(0, c.pair, s.mul_(scale) if scale != 1.0 else s)
        out = _from_pair_major(scores, n)
        _far_scores(out, q_side, k_side, layout, heads, scale, backend)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dscores):
        xq, xk, wq, wk = ctx.saved_tensors
        layout, heads, scale, backend = ctx.layout, ctx.heads, ctx.scale, ctx.backend
        need = ctx.needs_input_grad
        b, n = xq.shape[:2]
        q_side, k_side = _Side(xq, wq), _Side(xk, wk)
        q_side.start_grad(need[0], need[2])
        k_side.start_grad(need[1], need[3])
        dpairs = _pair_major(dscores, q_side.rows.dtype)
        if scale != 1.0:
            dpairs.mul_(scale)
        fm = _short_heads(q_side.width, heads, xq.device)
        saved, ctx.saved_projections = ctx.saved_projections, None     # used once, in place
        plan = backend.plan(layout, b, *_widths(xq, wq, wk), xq.element_size(), xq.device)
        for i, c in enumerate(plan):
            if saved is None:
                q, xq_rows, mq = q_side.project(c.q_tok, c.slot_q, c.tiles, fm)
                k, xk_rows, mk = k_side.project(c.k_tok, c.slot_k, c.tiles, fm)
            else:
                (q, k), (xq_rows, mq), (xk_rows, mk) = saved[i], q_side.gather(
                    c.q_tok, c.slot_q, c.tiles), k_side.gather(c.k_tok, c.slot_k, c.tiles)
            g = dpairs.index_select(0, c.pair)                         # (tiles·rows, B, heads)
            if fm:
                g = _pairs_to_tiles(g, c).contiguous()
            if need[0] or need[2]:                # dq = g·k, formed in k's buffer
                q_side.accumulate(c.q_tok, c.slot_q, xq_rows, mq, _pair_scale_(k, g, fm))
            if need[1] or need[3]:                # dk = g·q, in q's buffer
                k_side.accumulate(c.k_tok, c.slot_k, xk_rows, mk, _pair_scale_(q, g, fm))
        _far_scores_grad(dscores, q_side, k_side, layout, heads, scale, backend)
        dxq, dwq = q_side.finish_grad()
        dxk, dwk = k_side.finish_grad()
        return dxq, dxk, dwq, dwk, None, None, None, None, None


class _PairMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn, xv, wv, layout, heads, backend, save):
        ctx.save_for_backward(attn, xv, wv)
        ctx.layout, ctx.heads, ctx.backend = layout, heads, backend
        b, n = xv.shape[:2]
        v_side = _Side(xv, wv, save)
        weights = _pair_major(attn, v_side.rows.dtype)
        out = torch.zeros(n + 1, b, v_side.width, dtype=v_side.rows.dtype, device=xv.device)
        ctx.saved_projections = [] if save else None
        for c in backend.plan(layout, b, *_widths(xv, wv), xv.element_size(), xv.device):
            v, _, _ = v_side.project(c.k_tok, c.slot_q, c.tiles)
            if save:
                ctx.saved_projections.append(v)
                v = v.clone()                                           # scaled in place below
            a = weights.index_select(0, c.pair)                         # (tiles·rows, B, h)
            scaled = _scale_heads_(v, a, v_side)
            out.index_add_(0, c.q_tok, scaled.view(len(c.q_tok), b, v.shape[-1]))
        weights = attn.to(v_side.rows.dtype) if far.far_pairs(layout) else None
        for f in far.far_pairs(layout):
            vh = _far_project(v_side, f.k0, f.slot_v, f, b, heads)[2]
            far.mix(_heads_last(out[f.q0:f.q0 + f.m], b, heads), weights, f, vh,
                    backend.far_step(b, heads, f.m, xv.device))
        return out[:n].transpose(0, 1).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        attn, xv, wv = ctx.saved_tensors
        layout, heads, backend = ctx.layout, ctx.heads, ctx.backend
        need = ctx.needs_input_grad
        b, n = xv.shape[:2]
        v_side = _Side(xv, wv)
        v_side.start_grad(need[1], need[2])
        dout_t = _token_major(dout.to(v_side.rows.dtype))              # (N+1, B, C')
        weights = _pair_major(attn, v_side.rows.dtype) if need[1] or need[2] else None
        dattn = (torch.zeros(n * n + 1, b, heads, dtype=attn.dtype, device=attn.device)
                 if need[0] else None)
        saved, ctx.saved_projections = ctx.saved_projections, None     # used once, in place
        plan = backend.plan(layout, b, *_widths(xv, wv), xv.element_size(), xv.device)
        for i, c in enumerate(plan):
            if saved is None:
                v, xv_rows, mv = v_side.project(c.k_tok, c.slot_q, c.tiles)
            else:
                v, (xv_rows, mv) = saved[i], v_side.gather(c.k_tok, c.slot_q, c.tiles)
            go = torch.index_select(dout_t, 0, c.q_tok, out=v_side.buffer(
                "go", len(c.q_tok), *dout_t.shape[1:])).view(v.shape)  # (tiles, rows·B, C')
            if dattn is not None:                                       # v is not used after
                da = _head_dots(v, go, heads, attn.dtype).view(len(c.pair), b, heads)
                dattn.index_copy_(0, c.pair, da)
            if weights is not None:
                a = weights.index_select(0, c.pair)
                v_side.accumulate(c.k_tok, c.slot_q, xv_rows, mv, _scale_heads_(go, a, v_side))
        dattn = None if dattn is None else _from_pair_major(dattn, n)
        weights = attn.to(v_side.rows.dtype) if far.far_pairs(layout) else None
        for f in far.far_pairs(layout):
            vi, (v, xv_rows, mv), vh = _far_project(v_side, f.k0, f.slot_v, f, b, heads)
            dv = torch.zeros_like(v) if need[1] or need[2] else None
            far.mix_grad(_heads_last(dout_t[f.q0:f.q0 + f.m], b, heads), weights, dattn, f, vh,
                         _heads_last(dv, b, heads), backend.far_step(b, heads, f.m, xv.device))
            if dv is not None:
                v_side.accumulate(*vi, xv_rows, mv, dv)
        dxv, dwv = v_side.finish_grad()
        return dattn, dxv, dwv, None, None, None, None
