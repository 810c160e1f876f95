"""Attention layers: :class:`Translution`, :class:`AlphaTranslution` and the
:class:`SelfAttention` baseline (optionally with RoPE or a relative position bias), all with the
constructor shape ``(dim, layout, heads, dim_head)``. Modules own parameters and call
:mod:`translution.functional`.

Parameter convention (shared by every layer, so weights convert between them): projections are
stored input-major, ``wq/wk/wv`` of shape ``(C, C')`` or, when relative, banks
``(layout.num_slots, C, C')``; ``out`` is an ``nn.Linear(C', C)`` with bias.

With ``parameterization="residual"`` a relative bank ``w`` is stored as a shared matrix
``w_shared (C, C')`` plus a bank ``w_delta (slots, C, C')`` that starts at zero; reading
``layer.w`` then returns the effective bank ``w_shared[None] + w_delta`` (built each time).
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence as SequenceT

import torch
import torch.nn.functional as F
from torch import nn

from . import backends, functional
from .layouts import Layout, as_layout

__all__ = ["Translution", "AlphaTranslution", "SelfAttention", "parse_relative",
           "rotary_embedding", "AttentionCache", "PARAMETERIZATIONS"]

#: How a relative bank is stored: one free matrix per slot, or a shared matrix plus a per-slot
#: residual that starts at zero (weight decay then pulls every slot towards the shared matrix).
PARAMETERIZATIONS = ("independent", "residual")


def parse_relative(relative: str) -> frozenset:
    """``"qkv"``-style string → the set of relative projections (non-empty subset of q, k, v)."""
    if not isinstance(relative, str):
        raise TypeError(f"relative must be a string such as 'qkv', got {type(relative).__name__}")
    chosen = frozenset(relative)
    if not relative or not chosen <= set("qkv") or len(chosen) != len(relative):
        raise ValueError(f"relative must be a non-empty subset of 'qkv' without repeats "
                         f"(q, k, v, qk, qv, kv, qkv), got {relative!r}")
    return chosen


def _check_dims(dim, heads, dim_head):
    for name, value in (("dim", dim), ("heads", heads), ("dim_head", dim_head)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _linear_init(*shape: int) -> nn.Parameter:
    """``(..., fan_in, fan_out)`` parameter with nn.Linear's default range U(±1/√fan_in)."""
    bound = 1.0 / math.sqrt(shape[-2])
    return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))


def _bank(slots: int, fan_in: int, fan_out: int) -> nn.Parameter:
    """Reference-code bank init: kaiming_uniform_(a=√5) on the 3-d tensor, U(±1/√(in·out))."""
    bank = torch.empty(slots, fan_in, fan_out)
    nn.init.kaiming_uniform_(bank, a=math.sqrt(5))
    return nn.Parameter(bank)


def _check_parameterization(parameterization) -> str:
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, "
                         f"got {parameterization!r}")
    return parameterization


def _checked_backend(backend):
    """``backend`` as given (a name, an instance or ``None``) once it names a backend."""
    backends.check_backend(backend)
    return backend


def _layout_for(layout: Layout, shape: Optional[SequenceT[int]]) -> Layout:
    return layout if shape is None else layout.with_shape(*shape)


class _AttentionBase(nn.Module):
    def __init__(self, dim: int, layout: Optional[Layout], heads: int, dim_head: int):
        super().__init__()
        _check_dims(dim, heads, dim_head)
        self.layout = None if layout is None else as_layout(layout)
        self.dim, self.heads, self.dim_head = dim, heads, dim_head
        self.inner = heads * dim_head
        self.out = nn.Linear(self.inner, dim)

    def _check_x(self, x: torch.Tensor):
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected input of shape (batch, tokens, {self.dim}), got {shape}")
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim} input channels, got {x.shape[-1]} "
                             f"(input shape {tuple(x.shape)})")

    def _add_bank(self, name: str, parameterization: str, slots: int, fan_in: int,
                  fan_out: int, tied: bool = False):
        """Register the relative bank ``name`` ``(slots, fan_in, fan_out)``.

        Independent: one parameter, the reference init or (``tied``) one Linear-style matrix
        repeated. Residual: ``name_shared`` (Linear-style ``(fan_in, fan_out)``) and
        ``name_delta`` (zeros ``(slots, fan_in, fan_out)``)."""
        if parameterization == "residual":
            setattr(self, name + "_shared", _linear_init(fan_in, fan_out))
            setattr(self, name + "_delta", nn.Parameter(torch.zeros(slots, fan_in, fan_out)))
        elif tied:
            setattr(self, name, nn.Parameter(
                _linear_init(fan_in, fan_out).detach().expand(slots, fan_in, fan_out).clone()))
        else:
            setattr(self, name, _bank(slots, fan_in, fan_out))

    def __getattr__(self, name: str):
        params = self.__dict__.get("_parameters", {})
        if name + "_delta" in params:                    # a residual bank: W[None] + ΔW
            return params[name + "_shared"][None] + params[name + "_delta"]
        return super().__getattr__(name)

    def attention_weights(self, x: torch.Tensor,
                          shape: Optional[SequenceT[int]] = None) -> torch.Tensor:
        """Attention probabilities ``(B, heads, N, N)`` of input ``x`` ``(B, N, C)`` (rows: queries)."""
        return self._attend(x, shape, True)[1]

    def extra_repr(self):
        return f"dim={self.dim}, layout={self.layout!r}, heads={self.heads}, dim_head={self.dim_head}"

    def _rope_rows(self, t: torch.Tensor, start: int) -> torch.Tensor:
        """RoPE of rows ``t (B, m, C')`` at sequence positions ``start, …, start + m − 1``."""
        pos = torch.arange(start, start + t.shape[1], device=t.device)[:, None]
        t = t.unflatten(-1, (self.heads, self.dim_head)).transpose(1, 2)
        return rotary_embedding(t, pos, self.rope_base).transpose(1, 2).flatten(-2)

    def decode(self, x: torch.Tensor, cache: Optional["AttentionCache"] = None,
               capacity: Optional[int] = None):
        """Incremental attention on a causal sequence layout (the layer owns its cache).

        Args:
            x: ``(B, m, C)`` inputs of the next ``m >= 1`` positions.
            cache: the :class:`AttentionCache` this layer returned for the earlier positions,
                or ``None`` when ``x`` starts the sequence.
            capacity: positions to preallocate in a new cache (it grows past them by doubling).

        Returns:
            ``(y (B, m, C), cache)``: ``y`` equals ``self(prefix)[:, -m:]`` on the whole prefix
            read so far; the cache (advanced in place) holds every position read.

        Raises:
            ValueError: not a causal sequence layout, a cache of another batch, or more
                positions than an unclipped layout holds. TypeError: a cache of another kind.
        """
        return _decode(self, x, cache, capacity)


class Translution(_AttentionBase):
    """Translution attention layer (SPEC §1) with output projection.

    Args:
        dim: input/output channels ``C``.
        layout: :class:`~translution.layouts.Layout` of the tokens (fixes the bank size).
        heads: number of heads. dim_head: width per head (``C' = heads·dim_head``).
        relative: which projections are relative, any non-empty subset of ``"qkv"``.
        init: ``"reference"`` (banks U(±1/√(C·C')), as the paper's code) or ``"tied"`` (every
            slot starts from one Linear-style matrix: the layer then equals self-attention).
            Applies to ``parameterization="independent"``; a residual bank always starts tied.
        backend: default backend for :func:`~translution.functional.translution`.
        parameterization: ``"independent"`` (one free matrix per slot, ``wq/wk/wv``) or
            ``"residual"`` (slot ``s`` is ``W + ΔW[s]``: parameters ``w*_shared`` ``(C, C')``,
            Linear-style, and ``w*_delta`` ``(slots, C, C')``, zero at the start, so the layer
            starts as self-attention and weight decay pulls ΔW back to zero).
        save_projections: keep the relative projections for backward instead of recomputing
            them (faster, ``B·P·C'`` more floats per relative projection; see the functional).

    Shape:
        ``forward(x (B, N, C), shape=None) -> (B, N, C)``; ``shape`` runs a grid layout on
        another grid size (see :meth:`Layout.with_shape`).

    Example:
        >>> layer = Translution(192, Grid(7, 7, cls_token=True), heads=3, dim_head=64)
        >>> layer(torch.randn(8, 50, 192)).shape
        torch.Size([8, 50, 192])
    """

    def __init__(self, dim: int, layout: Layout, heads: int = 8, dim_head: int = 64,
                 relative: str = "qkv", init: str = "reference", backend=None,
                 parameterization: str = "independent",
                 save_projections: bool = False):
        super().__init__(dim, as_layout(layout), heads, dim_head)
        self.save_projections = save_projections
        self.relative = "".join(p for p in "qkv" if p in parse_relative(relative))
        if init not in ("reference", "tied"):
            raise ValueError(f"init must be 'reference' or 'tied', got {init!r}")
        self.backend = _checked_backend(backend)
        self.parameterization = _check_parameterization(parameterization)
        slots = self.layout.num_slots
        for name in "qkv":
            if name not in self.relative:
                setattr(self, "w" + name, _linear_init(dim, self.inner))
            else:
                self._add_bank("w" + name, parameterization, slots, dim, self.inner,
                               tied=init == "tied")

    def forward(self, x: torch.Tensor, shape: Optional[SequenceT[int]] = None) -> torch.Tensor:
        return self.out(self._attend(x, shape, False))

    def extra_repr(self):
        return (super().extra_repr() + f", relative={self.relative!r}"
                + f", parameterization={self.parameterization!r}")

    def _attend(self, x, shape, return_attention):
        self._check_x(x)
        return functional.translution(x, self.wq, self.wk, self.wv,
                                      _layout_for(self.layout, shape), heads=self.heads,
                                      backend=self.backend, return_attention=return_attention,
                                      save_projections=self.save_projections)

    @classmethod
    def from_self_attention(cls, attention: "SelfAttention", layout: Optional[Layout] = None,
                            relative: str = "qkv") -> "Translution":
        """A Translution layer whose every slot starts as ``attention``'s weights.

        The outputs match ``attention`` exactly before training when ``attention`` uses no
        position encoding (``position=None``); Translution layers encode position by their banks.
        """
        if not isinstance(attention, SelfAttention):
            raise TypeError(f"expected a translution.SelfAttention, got {type(attention).__name__}")
        layout = layout if layout is not None else attention.layout
        if layout is None:
            raise ValueError("the self-attention layer has no layout; pass layout=...")
        layer = cls(attention.dim, layout, attention.heads, attention.dim_head, relative)
        layer = layer.to(device=attention.wq.device, dtype=attention.wq.dtype)
        with torch.no_grad():
            for name in "qkv":
                src = getattr(attention, "w" + name)
                dst = getattr(layer, "w" + name)
                dst.copy_(src.expand_as(dst))
            layer.out.load_state_dict(attention.out.state_dict())
        return layer

    def _new_cache(self, x: torch.Tensor, capacity: Optional[int]) -> "AttentionCache":
        rows = {"x": x} if "k" in self.relative or "v" in self.relative else {}
        for name in "kv":
            if name in self.relative:
                rows["far_" + name] = x.new_empty(x.shape[0], 0, self.inner)
            else:
                rows[name] = x @ getattr(self, "w" + name)
        return AttentionCache(self, x.shape[1], capacity, **rows)

    def _decode_step(self, h: torch.Tensor, cache: "AttentionCache") -> torch.Tensor:
        """Attention of the new position (input ``h (B, C)``) before ``out`` → ``(B, C')``."""
        heads, rel = self.heads, self.relative
        n, nf = _near_far(self.layout, cache.length + 1)
        if "x" in cache:
            cache.append("x", h)
        if "q" in rel:
            q_near, q_far = _rel_query(h, self.wq, n, nf)
        else:
            q_near = q_far = (h @ self.wq)[:, None]
        kv = {}
        for name in "kv":
            if name in rel:
                kv[name] = _rel_keys(cache, "x", "far_" + name, getattr(self, "w" + name), n, nf)
            else:
                cache.append(name, h @ getattr(self, "w" + name))
                kv[name] = _split(cache[name], nf)
        (k_near, k_far), (v_near, v_far) = kv["k"], kv["v"]
        scale = self.dim_head ** -0.5
        a_near, a_far = _softmax_segments(_head_dot(q_near, k_near, heads) * scale,
                                          _head_dot(q_far, k_far, heads) * scale if nf else None)
        y = _mix(a_near, v_near, heads)
        return y + _mix(a_far, v_far, heads) if nf else y


class AlphaTranslution(_AttentionBase):
    """α-Translution (SPEC §3): self-attention plus a low-rank relative branch.

    Args:
        dim, layout, heads, dim_head: as :class:`Translution`.
        rank: per-head relative width ``r`` (branch width ``R = heads·r``; default 8).
        relative: relative subset of the low-rank branch (non-empty subset of ``"qkv"``).
        backend: default backend.
        parameterization: ``"independent"`` or ``"residual"`` (``m*`` = ``m*_shared (R, R)``,
            Linear-style, plus ``m*_delta (slots, R, R)``, zero at the start); see
            :class:`Translution`.
        save_projections: as :class:`Translution`.
        position: ``None`` or ``"rope"``: rotary embedding (:func:`rotary_embedding`, 1-D on
            sequences, axial 2-D / N-d on grids, the class token unrotated) of the standard
            branch's ``q_i`` and ``k_j`` before the logits; the low-rank branch is not rotated.
            With ``relative="v"`` this is the authors' latest ViT variant
            (``lor_rope_translution``: RoPE logits, relative values).
        rope_base: rotary frequency base.

    Parameters: ``wq/wk/wv (C, C')``; ``uq, uk (C, R)`` if q or k is relative; ``uv (C, R)`` and
    ``p (R, C')`` if v is; banks ``mq/mk/mv (slots, R, R)`` for the relative ones; ``out``.
    """

    def __init__(self, dim: int, layout: Layout, heads: int = 8, dim_head: int = 64,
                 rank: int = 8, relative: str = "qkv", backend=None,
                 parameterization: str = "independent", position: Optional[str] = None,
                 rope_base: float = 10000.0, save_projections: bool = False):
        super().__init__(dim, as_layout(layout), heads, dim_head)
        self.save_projections = save_projections
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        if position not in (None, "rope"):
            raise ValueError(f"position must be None or 'rope', got {position!r}")
        if position == "rope" and dim_head < 2 * self.layout.ndim:
            raise ValueError(f"position='rope' on a {self.layout.ndim}-d layout needs dim_head >= "
                             f"{2 * self.layout.ndim} (one rotated pair per axis), got {dim_head}")
        self.position, self.rope_base = position, rope_base
        self.relative = "".join(p for p in "qkv" if p in parse_relative(relative))
        self.rank, self.backend = rank, _checked_backend(backend)
        self.parameterization = _check_parameterization(parameterization)
        width, slots = heads * rank, self.layout.num_slots
        for name in "qkv":
            setattr(self, "w" + name, _linear_init(dim, self.inner))
        if "q" in self.relative or "k" in self.relative:
            self.uq, self.uk = _linear_init(dim, width), _linear_init(dim, width)
        if "v" in self.relative:
            self.uv, self.p = _linear_init(dim, width), _linear_init(width, self.inner)
        for name in self.relative:
            self._add_bank("m" + name, parameterization, slots, width, width)

    def forward(self, x: torch.Tensor, shape: Optional[SequenceT[int]] = None) -> torch.Tensor:
        return self.out(self._attend(x, shape, False))

    def _attend(self, x, shape, return_attention):
        self._check_x(x)
        extra = {name: getattr(self, name) for name in ("uq", "uk", "uv", "p")
                 if hasattr(self, name)}
        extra.update({"m" + name: getattr(self, "m" + name) for name in self.relative})
        layout = _layout_for(self.layout, shape)
        if self.position == "rope":
            layout = layout.for_tokens(x.shape[1])
            extra["rotary"] = functools.partial(
                rotary_embedding, positions=layout.positions.to(x.device), base=self.rope_base,
                skip=int(layout.cls_token))
        return functional.alpha_translution(x, self.wq, self.wk, self.wv, layout,
                                            heads=self.heads, backend=self.backend,
                                            return_attention=return_attention,
                                            save_projections=self.save_projections, **extra)

    def extra_repr(self):
        return (super().extra_repr() + f", rank={self.rank}, relative={self.relative!r}"
                + f", parameterization={self.parameterization!r}"
                + (f", position={self.position!r}" if self.position else ""))

    def _new_cache(self, x: torch.Tensor, capacity: Optional[int]) -> "AttentionCache":
        k = x @ self.wk
        rows = {"k": self._rope_rows(k, 0) if self.position == "rope" else k, "v": x @ self.wv}
        if "q" in self.relative or "k" in self.relative:
            rows["ku"] = x @ self.uk
        if "v" in self.relative:
            rows["vu"] = x @ self.uv
        for name in "kv":
            if name in self.relative:
                rows["far_" + name] = x.new_empty(x.shape[0], 0, self.heads * self.rank)
        return AttentionCache(self, x.shape[1], capacity, **rows)

    def _decode_step(self, h: torch.Tensor, cache: "AttentionCache") -> torch.Tensor:
        """Attention of the new position (input ``h (B, C)``) before ``out`` → ``(B, C')``."""
        heads, rel = self.heads, self.relative
        n, nf = _near_far(self.layout, cache.length + 1)
        scale = self.dim_head ** -0.5
        q, k = (h @ self.wq)[:, None], (h @ self.wk)[:, None]               # (B, 1, C')
        if self.position == "rope":
            q, k = self._rope_rows(q, cache.length), self._rope_rows(k, cache.length)
        cache.append("k", k)
        cache.append("v", h @ self.wv)
        s_near, s_far = _split(_head_dot(q, cache["k"], heads), nf)
        if "ku" in cache:                                          # q or k relative
            cache.append("ku", h @ self.uk)
            if "q" in rel:
                q_near, q_far = _rel_query(h @ self.uq, self.mq, n, nf)
            else:
                q_near = q_far = (h @ self.uq)[:, None]
            if "k" in rel:
                k_near, k_far = _rel_keys(cache, "ku", "far_k", self.mk, n, nf)
            else:
                k_near, k_far = _split(cache["ku"], nf)
            s_near = (s_near + _head_dot(q_near, k_near, heads)) * (scale / 2)
            s_far = (s_far + _head_dot(q_far, k_far, heads)) * (scale / 2) if nf else None
        else:
            s_near, s_far = s_near * scale, (s_far * scale if nf else None)
        a_near, a_far = _softmax_segments(s_near, s_far)
        y = _mix(_to_positions(a_near, a_far), cache["v"], heads)
        if "vu" in cache:                                          # v relative
            cache.append("vu", h @ self.uv)
            v_near, v_far = _rel_keys(cache, "vu", "far_v", self.mv, n, nf)
            rel_y = _mix(a_near, v_near, heads)
            if nf:
                rel_y = rel_y + _mix(a_far, v_far, heads)
            y = (y + rel_y @ self.p) / 2
        return y


def rotary_embedding(t: torch.Tensor, positions: torch.Tensor, base: float = 10000.0,
                     skip: int = 0) -> torch.Tensor:
    """Axial rotary position embedding.

    Args:
        t: ``(B, heads, N, dh)``.
        positions: ``(N - skip, ndim)`` integer or float coordinates of tokens ``skip:``.
        base: frequency base. skip: leading tokens left unrotated (e.g. the class token).

    Each axis rotates its own ``2·⌊dh / (2·ndim)⌋`` channels (NeoX half-split pairs); leftover
    channels pass through.
    """
    ndim = positions.shape[-1]
    per_axis = (t.shape[-1] // (2 * ndim)) * 2
    if per_axis == 0:
        raise ValueError(f"dim_head={t.shape[-1]} is too small for rotary embedding on {ndim} axes")
    half = per_axis // 2
    freqs = base ** (-torch.arange(half, dtype=torch.float64, device=t.device) / half)
    body = t[..., skip:, :]
    pieces = []
    for axis in range(ndim):
        angle = positions[:, axis, None].to(torch.float64) * freqs      # (N', half)
        cos, sin = angle.cos().to(t.dtype), angle.sin().to(t.dtype)
        chunk = body[..., axis * per_axis:(axis + 1) * per_axis]
        x1, x2 = chunk[..., :half], chunk[..., half:]
        pieces += [x1 * cos - x2 * sin, x2 * cos + x1 * sin]
    pieces.append(body[..., ndim * per_axis:])
    return torch.cat([t[..., :skip, :], torch.cat(pieces, dim=-1)], dim=-2)


class SelfAttention(_AttentionBase):
    """Standard multi-head self-attention (the baseline), same constructor shape as the others.

    Args:
        dim, heads, dim_head: as :class:`Translution`.
        layout: token layout; causal layouts apply the causal mask, and positions feed
            ``position``. ``None``: unmasked, no position encoding.
        position: ``None``; ``"rope"`` (axial rotary embedding, 1-D for sequences, 2-D/N-d for
            grids; the class token is not rotated); or ``"bias"`` (a learned per-head bias per
            layout slot, the Swin/BEiT relative position bias, zero-initialised).
        rope_base: rotary frequency base.
    """

    def __init__(self, dim: int, layout: Optional[Layout] = None, heads: int = 8,
                 dim_head: int = 64, position: Optional[str] = None, rope_base: float = 10000.0):
        super().__init__(dim, layout, heads, dim_head)
        if position not in (None, "rope", "bias"):
            raise ValueError(f"position must be None, 'rope' or 'bias', got {position!r}")
        if position is not None and layout is None:
            raise ValueError(f"position={position!r} needs a layout")
        self.position, self.rope_base = position, rope_base
        for name in "qkv":
            setattr(self, "w" + name, _linear_init(dim, self.inner))
        if position == "bias":
            self.bias_table = nn.Parameter(torch.zeros(self.layout.num_slots, heads))

    def forward(self, x: torch.Tensor, shape: Optional[SequenceT[int]] = None) -> torch.Tensor:
        return self.out(self._attend(x, shape, False))

    def _attend(self, x, shape, return_attention):
        self._check_x(x)
        b, n, _ = x.shape
        layout = None if self.layout is None else _layout_for(self.layout, shape).for_tokens(n)
        q, k, v = ((x @ getattr(self, "w" + name)).unflatten(-1, (self.heads, self.dim_head))
                   .transpose(1, 2) for name in "qkv")                 # (B, heads, N, dh)
        mask, causal = None, layout is not None and layout.causal
        if self.position == "rope":
            pos = layout.positions.to(x.device)
            q = rotary_embedding(q, pos, self.rope_base, int(layout.cls_token))
            k = rotary_embedding(k, pos, self.rope_base, int(layout.cls_token))
        elif self.position == "bias":
            index = layout.slot_index().to(x.device)
            mask = self.bias_table[index].permute(2, 0, 1).to(q.dtype)   # (heads, N, N)
            if causal:
                mask = mask.masked_fill(~layout.allowed().to(x.device), float("-inf"))
                causal = False
        if return_attention:
            scores = (q @ k.transpose(-1, -2)).to(torch.promote_types(q.dtype, torch.float32))
            scores = scores * self.dim_head ** -0.5
            if mask is not None:
                scores = scores + mask
            if causal:
                scores = scores.masked_fill(~layout.allowed().to(x.device), float("-inf"))
            attn = scores.softmax(-1)
            return (attn.to(v.dtype) @ v).transpose(1, 2).flatten(-2), attn
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return y.transpose(1, 2).flatten(-2)

    def _new_cache(self, x: torch.Tensor, capacity: Optional[int]) -> "AttentionCache":
        k = x @ self.wk
        if self.position == "rope":
            k = self._rope_rows(k, 0)
        return AttentionCache(self, x.shape[1], capacity, k=k, v=x @ self.wv)

    def _decode_step(self, h: torch.Tensor, cache: "AttentionCache") -> torch.Tensor:
        """Attention of the new position (input ``h (B, C)``) before ``out`` → ``(B, C')``."""
        i = cache.length
        q, k = (h @ self.wq)[:, None], (h @ self.wk)[:, None]
        if self.position == "rope":
            q, k = self._rope_rows(q, i), self._rope_rows(k, i)
        cache.append("k", k)
        cache.append("v", h @ self.wv)
        scores = _head_dot(q, cache["k"], self.heads) * self.dim_head ** -0.5   # (B, T, heads)
        if self.position == "bias":
            dist = torch.arange(i, -1, -1, device=h.device)[:, None]
            scores = scores + self.bias_table[self.layout.offset_slots(dist)].to(scores.dtype)
        return _mix(torch.softmax(scores, dim=1), cache["v"], self.heads)


# ---------------------------------------------------------------------------------------------
# Incremental decoding (causal sequence layouts): each layer's ``decode`` and its cache
# ---------------------------------------------------------------------------------------------
class _Rows:
    """A ``(B, T, W)`` tensor that grows along ``T`` (amortised O(1) appends by doubling)."""

    def __init__(self, data: torch.Tensor, capacity: Optional[int] = None):
        b, t = data.shape[:2]
        self.data = data.new_empty((b, max(int(capacity or 0), t, 1)) + tuple(data.shape[2:]))
        self.data[:, :t] = data
        self.n = t

    def append(self, rows: torch.Tensor) -> None:
        """Append ``rows`` ``(B, m, W)``."""
        m, cap = rows.shape[1], self.data.shape[1]
        if self.n + m > cap:
            grown = self.data.new_empty((self.data.shape[0], max(2 * cap, self.n + m))
                                        + tuple(self.data.shape[2:]))
            grown[:, :self.n] = self.data[:, :self.n]
            self.data = grown
        self.data[:, self.n:self.n + m] = rows
        self.n += m

    def view(self) -> torch.Tensor:
        """The ``(B, T, W)`` rows stored so far (a view)."""
        return self.data[:, :self.n]


class AttentionCache:
    """Decoding state of one attention layer, built and advanced by its ``decode`` method.

    What each layer keeps per sequence and position ``j`` (``K``: the layout's radius):

    * :class:`SelfAttention`: ``k`` (RoPE applied at ``j``) and ``v``, ``(B, T, C')``.
    * :class:`Translution`: the input ``x`` ``(B, T, C)`` when k or v is relative (their pair
      projections ``x_j·W[i − j]`` change with every new query ``i``); ``x_j·W`` for a
      non-relative ``k`` / ``v``; ``far_k`` / ``far_v``: ``x_j·W[K]`` of the partners further
      than ``K`` (clipped layouts: every far partner shares slot ``K``, computed once).
    * :class:`AlphaTranslution`: ``k``, ``v`` of the standard branch; ``ku = x_j·Uk`` and
      ``vu = x_j·Uv`` ``(B, T, R)`` for the low-rank branch; ``far_k`` / ``far_v`` as above.

    Attributes:
        kind: class name of the layer that built it. length: positions read (``T``).
        batch_size: ``B``.
    """

    def __init__(self, layer: nn.Module, length: int, capacity: Optional[int],
                 **rows: torch.Tensor):
        self.kind, self.length = type(layer).__name__, length
        self.batch_size = next(iter(rows.values())).shape[0]
        self._rows = {name: _Rows(t, capacity) for name, t in rows.items()}

    def __contains__(self, name: str) -> bool:
        return name in self._rows

    def __getitem__(self, name: str) -> torch.Tensor:
        """Rows of buffer ``name`` stored so far, ``(B, T', W)``."""
        return self._rows[name].view()

    def append(self, name: str, rows: torch.Tensor) -> None:
        """Append ``rows`` ``(B, W)`` (one position) or ``(B, m, W)`` to buffer ``name``."""
        self._rows[name].append(rows[:, None] if rows.dim() == 2 else rows)

    def capacity(self) -> int:
        """Positions the largest buffer holds without growing."""
        return max(r.data.shape[1] for r in self._rows.values())

    def nbytes(self) -> int:
        """Bytes allocated by the buffers (capacity included)."""
        return sum(r.data.numel() * r.data.element_size() for r in self._rows.values())

    def __repr__(self):
        return (f"AttentionCache({self.kind}, length={self.length}, batch_size="
                f"{self.batch_size}, buffers={sorted(self._rows)}, nbytes={self.nbytes():,})")


def _decode(layer: _AttentionBase, x: torch.Tensor, cache: Optional[AttentionCache],
            capacity: Optional[int]):
    """Shared driver of the layers' ``decode`` (see :meth:`SelfAttention.decode`)."""
    layer._check_x(x)
    layout, m = layer.layout, x.shape[1]
    if layout is None or not layout.causal or layout.ndim != 1 or layout.cls_token:
        raise ValueError(f"incremental decoding needs a causal sequence layout "
                         f"(Sequence(L, causal=True)), got {layout!r}")
    if m < 1:
        raise ValueError(f"decode needs at least one new position, got input shape "
                         f"{tuple(x.shape)}")
    if cache is not None:
        if not isinstance(cache, AttentionCache) or cache.kind != type(layer).__name__:
            got = (f"a cache built by {cache.kind}" if isinstance(cache, AttentionCache)
                   else f"a {type(cache).__name__}")
            raise TypeError(f"a {type(layer).__name__} layer decodes with the AttentionCache its "
                            f"own decode returned, got {got}")
        if cache.batch_size != x.shape[0]:
            raise ValueError(f"the cache holds {cache.batch_size} sequences, the input "
                             f"{x.shape[0]}")
    total = m + (0 if cache is None else cache.length)
    if layout.max_distance is None and total > layout.extent[0]:
        raise ValueError(f"decoding would read {total} positions, more than this layer's "
                         f"layout holds ({layout!r}); use max_distance=K to read any length")
    if cache is None:
        return layer(x), layer._new_cache(x, capacity)
    ys = []
    for t in range(m):
        ys.append(layer._decode_step(x[:, t], cache))
        cache.length += 1
    return layer.out(torch.stack(ys, dim=1)), cache


def _head_dot(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """Per-head dot products. ``q (B, m or 1, W)``, ``k (B, m, W)`` → ``(B, m, heads)``."""
    return (q.unflatten(-1, (heads, -1)) * k.unflatten(-1, (heads, -1))).sum(-1)


def _mix(attn: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """``Σ_m attn[b, m, h]·v[b, m, h, :]``. ``attn (B, m, heads)``, ``v (B, m, W)`` → ``(B, W)``."""
    return torch.einsum("bmh,bmhd->bhd", attn.to(v.dtype), v.unflatten(-1, (heads, -1))).flatten(1)


def _near_far(layout: Layout, length: int):
    """For a new position ``length − 1``: (near slots ``n``, far partners ``nf``) — partners
    ``j < nf`` are further than the radius ``K`` and share slot ``K``."""
    n = min(length, layout.radii[0] + 1)
    return n, length - n


def _split(t: torch.Tensor, nf: int):
    """Position-ordered ``(B, T, ...)`` → (near part in distance order, far part in position
    order or ``None``)."""
    return t[:, nf:].flip(1), (t[:, :nf] if nf else None)


def _rel_query(h: torch.Tensor, bank: torch.Tensor, n: int, nf: int):
    """Query side of a relative projection of the new position ``h (B, c)``, ``bank (S, c, c')``
    → near ``(B, n, c')`` (``h·bank[d]``, distance order) and far ``(B, 1, c')`` (slot ``n − 1``)
    or ``None``."""
    near = torch.bmm(h.expand(n, -1, -1), bank[:n]).transpose(0, 1)   # bmm: one GEMM per slot
    return near, (near[:, n - 1:n] if nf else None)


def _rel_keys(cache: AttentionCache, src: str, far: str, bank: torch.Tensor, n: int, nf: int):
    """Key / value side of a relative projection for every partner of the new position.

    ``cache[src]`` ``(B, T, c)`` holds the partners' inputs in position order (new one last);
    ``cache[far]`` caches ``src_j·bank[n − 1]`` of far partners. Returns near ``(B, n, c')``
    (``src_{T−1−d}·bank[d]``, distance order) and far ``(B, nf, c')`` or ``None``.
    """
    rows = cache[src]
    near = torch.bmm(rows[:, nf:].transpose(0, 1).flip(0), bank[:n]).transpose(0, 1)
    if not nf:
        return near, None
    done = cache[far].shape[1]
    if done < nf:
        cache.append(far, rows[:, done:nf] @ bank[n - 1])
    return near, cache[far][:, :nf]


def _softmax_segments(near: torch.Tensor, far: Optional[torch.Tensor]):
    """Softmax over the partners (dim 1) of both segments → (attention near, attention far)."""
    if far is None:
        return torch.softmax(near, dim=1), None
    attn = torch.softmax(torch.cat([near, far], dim=1), dim=1)
    return attn[:, :near.shape[1]], attn[:, near.shape[1]:]


def _to_positions(near: torch.Tensor, far: Optional[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`_split`."""
    return near.flip(1) if far is None else torch.cat([far, near.flip(1)], dim=1)
