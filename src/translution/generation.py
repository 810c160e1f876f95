"""Incremental (cached) decoding and sampling for :class:`~translution.models.GPT`.

Self-attention caches keys and values. Causal Translution cannot: its key and value of a pair
depend on the distance ``d = i − j`` (``k_ij = x_j·Wk[d]``, ``v_ij = x_j·Wv[d]``), so they change
whenever a new query arrives. What a Translution layer can reuse is its *normalised input*
``x_j`` (the block's ``LN(x)``) of every earlier position. A new token at position ``i`` then
costs ``O(n·C·C')`` per relative projection, ``n = min(i+1, K+1)``: the slice ``W[0..n)`` of the
bank is applied to the reversed inputs ``x_i, x_{i−1}, …`` (a batched matmul over the slots, no
``N×N×C×C'`` gather and no copy of the bank). With clipping (``max_distance=K``) every partner
further than ``K`` uses the fixed slot ``K``, so its projection ``x_j·W[K]`` is computed once, when
it leaves the window, and cached: per-token cost stays ``O(K·C·C' + i·C')`` however long the
sequence grows.

What each layer kind caches (:class:`DecodeCache`), per sequence and position ``j``:

* :class:`~translution.SelfAttention` (``ape`` / ``rope`` / ``bias``): ``k_j`` (RoPE applied at
  the absolute position) and ``v_j``; the bias kind looks up its table for the slots
  ``min(i − j, K)`` of the new row.
* :class:`~translution.Translution`: the normalised input ``x_j`` when k or v is relative;
  ``x_j·W`` for a non-relative k / v; ``x_j·W[K]`` for a relative k / v once ``j`` is further
  than ``K`` (clipped models only).
* :class:`~translution.AlphaTranslution`: the standard branch's ``k_j``, ``v_j``; ``x_j·Uk`` and
  ``x_j·Uv`` (width ``R``) for the low-rank branch, whose ``M`` banks are applied like
  Translution's; ``(x_j·U)·M[K]`` for far partners.

Public API::

    logits, cache = prefill(model, prompt)            # (B, V), cache of T0 positions
    logits, cache = decode_step(model, cache, token)  # (B,) ids → (B, V); cache grows by one
    out = generate(model, prompt, 50, temperature=0.8, top_k=40,
                   generator=torch.Generator().manual_seed(0))
    tokens_per_s = decode_throughput(model, prompt_len=64, new_tokens=64, use_cache=True)

Length limits: a model with ``max_distance`` and no absolute position embedding reads any length
(the slot of distance ``d`` is ``min(d, K)``), so decoding may run past ``block_size`` and the
cache keeps growing. Otherwise (``"ape"``, or unclipped banks / bias tables) the model reads at
most ``block_size`` tokens and :func:`generate` raises a ``ValueError`` when asked for more,
unless ``sliding_window=True`` (then, once the limit is reached, every further token is
predicted from the last ``block_size`` tokens, recomputed without cache — the behaviour of
:meth:`GPT.generate <translution.models.GPT.generate>`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from .layers import AlphaTranslution, SelfAttention, Translution, rotary_embedding
from .models.blocks import Block
from .models.gpt import GPT

__all__ = ["DecodeCache", "prefill", "decode_step", "generate", "sample_next", "top_k_filter",
           "decode_throughput"]


# ---------------------------------------------------------------------------------------------
# growable storage
# ---------------------------------------------------------------------------------------------
class _Buffer:
    """A ``(B, T, W)`` tensor that grows along ``T`` with amortised O(1) appends."""

    def __init__(self, data: torch.Tensor, capacity: Optional[int] = None):
        b, t = data.shape[:2]
        cap = max(int(capacity or 0), t, 1)
        self.data = data.new_empty((b, cap) + tuple(data.shape[2:]))
        self.data[:, :t] = data
        self.n = t

    def append(self, rows: torch.Tensor) -> None:
        """Append ``rows`` ``(B, m, W)``."""
        m = rows.shape[1]
        if self.n + m > self.data.shape[1]:
            grown = self.data.new_empty((self.data.shape[0], max(2 * self.data.shape[1],
                                                                 self.n + m))
                                        + tuple(self.data.shape[2:]))
            grown[:, :self.n] = self.data[:, :self.n]
            self.data = grown
        self.data[:, self.n:self.n + m] = rows
        self.n += m

    def view(self) -> torch.Tensor:
        """The ``(B, T, W)`` rows stored so far (a view)."""
        return self.data[:, :self.n]

    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


def _empty(like: torch.Tensor, width: int, capacity: Optional[int]) -> _Buffer:
    return _Buffer(like.new_empty(like.shape[0], 0, width), capacity)


# ---------------------------------------------------------------------------------------------
# per-layer state
# ---------------------------------------------------------------------------------------------
@dataclass
class _SelfAttentionState:
    k: _Buffer                      # (B, T, C'), RoPE applied
    v: _Buffer                      # (B, T, C')


@dataclass
class _TranslutionState:
    x: Optional[_Buffer]            # (B, T, C) normalised inputs (k or v relative)
    plain: Dict[str, _Buffer]       # non-relative k / v: x_j·W, (B, T, C')
    far: Dict[str, _Buffer] = field(default_factory=dict)   # relative k / v: x_j·W[K]


@dataclass
class _AlphaState:
    k: _Buffer                      # (B, T, C') standard branch
    v: _Buffer
    ku: Optional[_Buffer]           # (B, T, R) x_j·Uk when q or k is relative
    vu: Optional[_Buffer]           # (B, T, R) x_j·Uv when v is relative
    far: Dict[str, _Buffer] = field(default_factory=dict)   # ku_j·Mk[K], vu_j·Mv[K]


_State = Union[_SelfAttentionState, _TranslutionState, _AlphaState]


class DecodeCache:
    """Per-layer decoding state of a :class:`~translution.models.GPT` (see the module docstring).

    Built by :func:`prefill`, advanced in place by :func:`decode_step`.

    Attributes:
        layers: one state per block.
        length: number of positions processed so far (``T``; the next token sits at ``T``).
        batch_size: ``B``.
    """

    def __init__(self, layers: List[_State], length: int, batch_size: int):
        self.layers = layers
        self.length = length
        self.batch_size = batch_size

    def nbytes(self) -> int:
        """Bytes allocated by the cache's tensors (capacity included)."""
        total = 0
        for st in self.layers:
            for value in vars(st).values():
                bufs = value.values() if isinstance(value, dict) else [value]
                total += sum(b.nbytes() for b in bufs if isinstance(b, _Buffer))
        return total

    def __repr__(self):
        return (f"DecodeCache(layers={len(self.layers)}, length={self.length}, "
                f"batch_size={self.batch_size}, nbytes={self.nbytes():,})")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _head_dot(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """Per-head dot products. ``q (B, m or 1, W)``, ``k (B, m, W)`` → ``(B, m, heads)``."""
    return (q.unflatten(-1, (heads, -1)) * k.unflatten(-1, (heads, -1))).sum(-1)


def _mix(attn: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """``Σ_m attn[b, m, h] · v[b, m, h, :]``. ``attn (B, m, heads)``, ``v (B, m, W)`` → ``(B, W)``."""
    return torch.einsum("bmh,bmhd->bhd", attn.to(v.dtype), v.unflatten(-1, (heads, -1))).flatten(1)


def _split(t: torch.Tensor, nf: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Position-ordered ``(B, T, ...)`` → (near part in distance order, far part in position
    order): ``(t[:, nf:].flip(1), t[:, :nf])``."""
    return t[:, nf:].flip(1), t[:, :nf]


def _rel_query(h: torch.Tensor, bank: torch.Tensor, n: int, nf: int):
    """Query side of a relative projection for one new token.

    Args:
        h: ``(B, c)`` the new token's (projected) input.
        bank: ``(slots, c, c')``. n: near slots ``0..n``. nf: number of far partners.

    Returns:
        near ``(B, n, c')`` (distance order: ``h·bank[d]``), far ``(B, 1, c')`` (``h·bank[n-1]``,
        the clipped slot, used by every far partner) or ``None``.
    """
    # a batched matmul over the slots (einsum picks a slow path for B > 1)
    near = torch.bmm(h.expand(n, -1, -1), bank[:n]).transpose(0, 1)
    far = near[:, n - 1:n] if nf else None
    return near, far


def _rel_keys(src: torch.Tensor, bank: torch.Tensor, n: int, nf: int,
              far_buf: Optional[_Buffer]):
    """Key / value side of a relative projection for all partners of the new token.

    Args:
        src: ``(B, T, c)`` partners' (projected) inputs in position order (the new token last).
        bank: ``(slots, c, c')``. n: near slots. nf: far partners ``j < T − n``.
        far_buf: cache of ``src_j·bank[n−1]`` for far partners (filled up to ``nf`` here).

    Returns:
        near ``(B, n, c')`` in distance order (``src_{T−1−d}·bank[d]``), far ``(B, nf, c')`` in
        position order.
    """
    near = torch.bmm(src[:, nf:].transpose(0, 1).flip(0), bank[:n]).transpose(0, 1)
    if not nf:
        return near, None
    if far_buf.n < nf:
        far_buf.append(src[:, far_buf.n:nf] @ bank[n - 1])
    return near, far_buf.view()[:, :nf]


def _near_far(layer: nn.Module, length: int) -> Tuple[int, int]:
    """For a new token at position ``length − 1``: (near slots n, far partners nf)."""
    radius = layer.layout.radii[0]
    n = min(length, radius + 1)
    return n, length - n


def _softmax_segments(near: torch.Tensor, far: Optional[torch.Tensor]):
    """Softmax over the partners of both segments (dim 1) → (attn near, attn far)."""
    if far is None:
        return torch.softmax(near, dim=1), None
    attn = torch.softmax(torch.cat([near, far], dim=1), dim=1)
    return attn[:, :near.shape[1]], attn[:, near.shape[1]:]


def _to_positions(near: torch.Tensor, far: Optional[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`_split`."""
    return near.flip(1) if far is None else torch.cat([far, near.flip(1)], dim=1)


def _check_layer(layer: nn.Module) -> None:
    if not isinstance(layer, (SelfAttention, Translution, AlphaTranslution)):
        raise TypeError(f"cached decoding supports Translution, AlphaTranslution and "
                        f"SelfAttention layers, got {type(layer).__name__}")
    layout = layer.layout
    if layout is None or not layout.causal or layout.ndim != 1:
        raise ValueError(f"cached decoding needs causal 1-D sequence layouts, got {layout!r}")


# ---------------------------------------------------------------------------------------------
# per-layer prefill and step
# ---------------------------------------------------------------------------------------------
def _prefill_layer(layer: nn.Module, h: torch.Tensor, capacity: Optional[int]) -> _State:
    """State after reading ``h`` ``(B, T, C)`` (the layer's normalised inputs)."""
    if isinstance(layer, SelfAttention):
        k, v = h @ layer.wk, h @ layer.wv
        if layer.position == "rope":
            pos = torch.arange(h.shape[1], device=h.device)[:, None]
            k = k.unflatten(-1, (layer.heads, -1)).transpose(1, 2)
            k = rotary_embedding(k, pos, layer.rope_base).transpose(1, 2).flatten(-2)
        return _SelfAttentionState(_Buffer(k, capacity), _Buffer(v, capacity))
    if isinstance(layer, Translution):
        rel = layer.relative
        x = _Buffer(h, capacity) if ("k" in rel or "v" in rel) else None
        plain = {name: _Buffer(h @ getattr(layer, "w" + name), capacity)
                 for name in "kv" if name not in rel}
        far = {name: _empty(h, layer.inner, capacity) for name in "kv" if name in rel}
        return _TranslutionState(x, plain, far)
    # AlphaTranslution
    rel = layer.relative
    rel_qk = "q" in rel or "k" in rel
    width = layer.heads * layer.rank
    ku = _Buffer(h @ layer.uk, capacity) if rel_qk else None
    vu = _Buffer(h @ layer.uv, capacity) if "v" in rel else None
    far = {name: _empty(h, width, capacity) for name in "kv" if name in rel}
    return _AlphaState(_Buffer(h @ layer.wk, capacity), _Buffer(h @ layer.wv, capacity),
                       ku, vu, far)


def _step_self_attention(layer: SelfAttention, st: _SelfAttentionState, h: torch.Tensor,
                         length: int) -> torch.Tensor:
    heads, i = layer.heads, length - 1
    q, k = h @ layer.wq, h @ layer.wk
    if layer.position == "rope":
        pos = torch.tensor([[i]], device=h.device)
        q, k = (rotary_embedding(t.view(-1, heads, 1, layer.dim_head), pos, layer.rope_base)
                .flatten(1) for t in (q, k))
    st.k.append(k[:, None])
    st.v.append((h @ layer.wv)[:, None])
    scores = _head_dot(q[:, None], st.k.view(), heads) * layer.dim_head ** -0.5   # (B, T, H)
    if layer.position == "bias":
        dist = torch.arange(i, -1, -1, device=h.device)[:, None]
        scores = scores + layer.bias_table[layer.layout.offset_slots(dist)].to(scores.dtype)
    return _mix(torch.softmax(scores, dim=1), st.v.view(), heads)


def _step_translution(layer: Translution, st: _TranslutionState, h: torch.Tensor,
                      length: int) -> torch.Tensor:
    heads, rel = layer.heads, layer.relative
    n, nf = _near_far(layer, length)
    if st.x is not None:
        st.x.append(h[:, None])
    proj = {}
    if "q" in rel:
        proj["q"] = _rel_query(h, layer.wq, n, nf)
    else:
        q = (h @ layer.wq)[:, None]
        proj["q"] = (q, q if nf else None)
    for name in "kv":
        w = getattr(layer, "w" + name)
        if name in rel:
            proj[name] = _rel_keys(st.x.view(), w, n, nf, st.far[name])
        else:
            st.plain[name].append((h @ w)[:, None])
            near, far = _split(st.plain[name].view(), nf)
            proj[name] = (near, far if nf else None)
    scale = layer.dim_head ** -0.5
    (qn, qf), (kn, kf), (vn, vf) = proj["q"], proj["k"], proj["v"]
    an, af = _softmax_segments(_head_dot(qn, kn, heads) * scale,
                               _head_dot(qf, kf, heads) * scale if nf else None)
    y = _mix(an, vn, heads)
    return y + _mix(af, vf, heads) if nf else y


def _step_alpha(layer: AlphaTranslution, st: _AlphaState, h: torch.Tensor,
                length: int) -> torch.Tensor:
    heads, rel = layer.heads, layer.relative
    n, nf = _near_far(layer, length)
    scale = layer.dim_head ** -0.5
    st.k.append((h @ layer.wk)[:, None])
    st.v.append((h @ layer.wv)[:, None])
    std = _head_dot((h @ layer.wq)[:, None], st.k.view(), heads)          # (B, T, H)
    sn, sf = _split(std, nf)
    if st.ku is not None:                                                  # q or k relative
        qu = h @ layer.uq
        st.ku.append((h @ layer.uk)[:, None])
        if "q" in rel:
            qn, qf = _rel_query(qu, layer.mq, n, nf)
        else:
            qn = qf = qu[:, None]
        if "k" in rel:
            kn, kf = _rel_keys(st.ku.view(), layer.mk, n, nf, st.far["k"])
        else:
            kn, kf = _split(st.ku.view(), nf)
        sn = (sn + _head_dot(qn, kn, heads)) * (scale / 2)
        sf = (sf + _head_dot(qf, kf, heads)) * (scale / 2) if nf else None
    else:
        sn, sf = sn * scale, (sf * scale if nf else None)
    an, af = _softmax_segments(sn, sf)
    out = _mix(_to_positions(an, af), st.v.view(), heads)
    if st.vu is not None:                                                  # v relative
        st.vu.append((h @ layer.uv)[:, None])
        vn, vf = _rel_keys(st.vu.view(), layer.mv, n, nf, st.far["v"])
        rel_out = _mix(an, vn, heads)
        if nf:
            rel_out = rel_out + _mix(af, vf, heads)
        out = (out + rel_out @ layer.p) / 2
    return out


def _step_layer(layer: nn.Module, st: _State, h: torch.Tensor, length: int) -> torch.Tensor:
    """Attention output ``(B, C)`` of the new token (``h (B, C)``, at position ``length − 1``)."""
    if isinstance(layer, SelfAttention):
        y = _step_self_attention(layer, st, h, length)
    elif isinstance(layer, Translution):
        y = _step_translution(layer, st, h, length)
    else:
        y = _step_alpha(layer, st, h, length)
    return layer.out(y)


# ---------------------------------------------------------------------------------------------
# model level
# ---------------------------------------------------------------------------------------------
def _check_model(model) -> None:
    if not isinstance(model, GPT):
        raise TypeError(f"expected a translution.models.GPT, got {type(model).__name__}")
    for block in model.blocks:
        if not isinstance(block, Block):
            raise TypeError(f"cached decoding expects translution Block modules, "
                            f"got {type(block).__name__}")
        _check_layer(block.attn)


def _limit_error(model: GPT, length: int, what: str) -> ValueError:
    c = model.config
    if c.attention == "ape":
        fix = ("its learned absolute position embedding has block_size rows, so this limit "
               "cannot be lifted; pass sliding_window=True to predict from the last "
               "block_size tokens")
    else:
        fix = ("its relative banks/tables are built for block_size positions; build the model "
               "with max_distance=K (offsets clipped to K) to decode past block_size, or pass "
               "sliding_window=True to predict from the last block_size tokens")
    return ValueError(f"{what} {length} tokens, more than block_size={c.block_size} of this "
                      f"model ({fix})")


@torch.no_grad()
def prefill(model: GPT, tokens: torch.Tensor,
            capacity: Optional[int] = None) -> Tuple[torch.Tensor, DecodeCache]:
    """Read a prompt and build the decoding cache.

    The prompt is run through the model's own layers (same results as ``model(tokens)``) while
    each block's normalised attention input is recorded.

    Args:
        model: a :class:`~translution.models.GPT`.
        tokens: ``(B, T0)`` integer prompt, ``1 <= T0`` (``<= block_size`` unless the model
            reads any length, see :attr:`GPT.max_length`).
        capacity: expected final length, to preallocate the cache (it grows anyway).

    Returns:
        ``(logits (B, vocab_size) of the last position, cache)``.
    """
    _check_model(model)
    model._check_tokens(tokens)
    b, t = tokens.shape
    x = model.token_embed(tokens)
    if model.pos_embed is not None:
        x = x + model.pos_embed(torch.arange(t, device=tokens.device))
    states = []
    for block in model.blocks:
        h = block.norm1(x)
        states.append(_prefill_layer(block.attn, h, capacity))
        x = x + block.attn(h)
        x = x + block.mlp(block.norm2(x))
    logits = model.head(model.norm(x[:, -1]))
    return logits, DecodeCache(states, t, b)


@torch.no_grad()
def decode_step(model: GPT, cache: DecodeCache,
                token: torch.Tensor) -> Tuple[torch.Tensor, DecodeCache]:
    """Append one token per sequence and return the next-token logits.

    Args:
        model: the model the cache was built with.
        cache: from :func:`prefill`; advanced in place (and returned).
        token: ``(B,)`` or ``(B, 1)`` integer ids, placed at position ``cache.length``.

    Returns:
        ``(logits (B, vocab_size), cache)``, equal to ``model(all_tokens)[:, -1]``.

    Raises:
        ValueError: wrong shape / ids, or the model cannot read ``cache.length + 1`` tokens.
    """
    _check_model(model)
    if not isinstance(cache, DecodeCache):
        raise TypeError(f"cache must be a DecodeCache from prefill(), got {type(cache).__name__}")
    if len(cache.layers) != len(model.blocks):
        raise ValueError(f"the cache has {len(cache.layers)} layers, the model "
                         f"{len(model.blocks)}; use the model the cache was built with")
    if not isinstance(token, torch.Tensor):
        raise TypeError(f"token must be a torch.Tensor, got {type(token).__name__}")
    if token.dim() == 2 and token.shape[1] == 1:
        token = token[:, 0]
    if token.dim() != 1 or token.shape[0] != cache.batch_size:
        raise ValueError(f"token must have shape ({cache.batch_size},) or "
                         f"({cache.batch_size}, 1), got {tuple(token.shape)}")
    model._check_tokens(token[:, None])
    length = cache.length + 1
    limit = model.max_length
    if limit is not None and length > limit:
        raise _limit_error(model, length, "decoding this token would make the model read")
    x = model.token_embed(token)
    if model.pos_embed is not None:
        x = x + model.pos_embed.weight[length - 1]
    for block, st in zip(model.blocks, cache.layers):
        x = x + _step_layer(block.attn, st, block.norm1(x), length)
        x = x + block.mlp(block.norm2(x))
    cache.length = length
    return model.head(model.norm(x)), cache


# ---------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------
def _check_sampling(temperature, top_k) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or math.isnan(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")


def top_k_filter(logits: torch.Tensor, k: Optional[int]) -> torch.Tensor:
    """Set every logit below the ``k``-th largest of its row to ``-inf`` (ties with the k-th
    are kept).

    Args:
        logits: ``(B, V)``. k: ``None`` (no filter) or ``>= 1``; clamped to ``V``.

    Returns:
        ``(B, V)`` filtered copy.
    """
    _check_sampling(0, k)
    if k is None or k >= logits.shape[-1]:
        return logits.clone()
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Pick the next token of every row.

    Args:
        logits: ``(B, V)`` next-token logits.
        temperature: ``0``: argmax (greedy); otherwise sample from ``softmax(logits / T)``.
        top_k: keep only the ``k`` most likely tokens before sampling.
        generator: random generator (sampling is deterministic given its state).

    Returns:
        ``(B, 1)`` long token ids.
    """
    _check_sampling(temperature, top_k)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = top_k_filter(logits, top_k)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def generate(model: GPT, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: Optional[int] = None, use_cache: bool = True,
             generator: Optional[torch.Generator] = None,
             sliding_window: bool = False) -> torch.Tensor:
    """Autoregressive sampling.

    Args:
        model: a :class:`~translution.models.GPT`.
        prompt: ``(B, T0)`` integer ids, ``T0 >= 1``.
        max_new_tokens: tokens to append (``>= 0``).
        temperature: softmax temperature; ``0`` is greedy (argmax).
        top_k: sample among the ``k`` most likely tokens only (``None``: all).
        use_cache: decode incrementally with a :class:`DecodeCache` (``False``: recompute the
            whole sequence for every token — same result, for checking and benchmarks).
        generator: ``torch.Generator`` for sampling; given its state, the output is
            deterministic.
        sliding_window: when the model has a length limit (:attr:`GPT.max_length`) and the
            sequence outgrows it, predict from the last ``block_size`` tokens (recomputed, no
            cache) instead of raising.

    Returns:
        ``(B, T0 + max_new_tokens)`` (the prompt's dtype): the prompt followed by the new
        tokens.

    Raises:
        ValueError: bad arguments (empty prompt, ``temperature < 0``, ``top_k < 1``,
            ``max_new_tokens < 0``) or, without ``sliding_window``, a sequence longer than the
            model can read (the message names the limit and the fix: ``max_distance``).
    """
    _check_model(model)
    _check_sampling(temperature, top_k)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not isinstance(prompt, torch.Tensor):
        raise TypeError(f"prompt must be a torch.Tensor, got {type(prompt).__name__}")
    if prompt.dim() != 2 or prompt.shape[0] < 1 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be a non-empty (batch, time) tensor of token ids, "
                         f"got shape {tuple(prompt.shape)}")
    t0, limit = prompt.shape[1], model.max_length
    if limit is not None and not sliding_window:
        if t0 > limit:
            raise _limit_error(model, t0, "the prompt has")
        # The model reads every token but the last one generated.
        if t0 + max_new_tokens - 1 > limit:
            raise _limit_error(model, t0 + max_new_tokens - 1,
                               f"generating {max_new_tokens} tokens after a prompt of {t0} "
                               f"needs the model to read")
    model._check_tokens(prompt if limit is None else prompt[:, -limit:])
    out = [prompt]
    cache: Optional[DecodeCache] = None
    for step in range(max_new_tokens):
        if step == 0 and use_cache and (limit is None or t0 <= limit):
            logits, cache = prefill(model, prompt, capacity=t0 + max_new_tokens)
        elif cache is not None and (limit is None or cache.length < limit):
            logits, cache = decode_step(model, cache, out[-1][:, -1])
        else:
            cache = None                               # window slid: recompute the context
            seq = torch.cat(out, dim=1)
            logits = model(seq if limit is None else seq[:, -limit:])[:, -1]
        out.append(sample_next(logits, temperature, top_k, generator).to(prompt.dtype))
    return torch.cat(out, dim=1)


# ---------------------------------------------------------------------------------------------
# benchmark
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def decode_throughput(model: GPT, prompt_len: int, new_tokens: int, use_cache: bool,
                      batch_size: int = 1, repeats: int = 1, seed: int = 0) -> float:
    """Generated tokens per second of greedy :func:`generate` (prefill included).

    Args:
        model: a GPT (on the device to measure; its parameters' dtype is used).
        prompt_len: random prompt length ``T0``. new_tokens: tokens generated per sequence.
        use_cache: cached decoding or full recomputation per token.
        batch_size: sequences generated together.
        repeats: timed runs (the best is reported) after one short warm-up.
        seed: prompt seed.

    Returns:
        ``batch_size · new_tokens / seconds`` of the fastest run.
    """
    _check_model(model)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, model.config.vocab_size, (batch_size, prompt_len),
                           generator=gen).to(device)
    generate(model, prompt, min(2, new_tokens), temperature=0, use_cache=use_cache)  # warm-up
    best = math.inf
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        generate(model, prompt, new_tokens, temperature=0, use_cache=use_cache)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return batch_size * new_tokens / best
