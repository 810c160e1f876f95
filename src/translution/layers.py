"""Attention layers: :class:`Translution`, :class:`AlphaTranslution` and the
:class:`SelfAttention` baseline (optionally with RoPE or a relative position bias), all with the
constructor shape ``(dim, layout, heads, dim_head)``. Modules own parameters and call
:mod:`translution.functional`.

Parameter convention (shared by every layer, so weights convert between them): projections are
stored input-major, ``wq/wk/wv`` of shape ``(C, C')`` or, when relative, banks
``(layout.num_slots, C, C')``; ``out`` is an ``nn.Linear(C', C)`` with bias.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence as SequenceT

import torch
import torch.nn.functional as F
from torch import nn

from . import functional
from .layouts import Layout, as_layout

__all__ = ["Translution", "AlphaTranslution", "SelfAttention", "parse_relative",
           "rotary_embedding"]


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

    def attention_weights(self, x: torch.Tensor,
                          shape: Optional[SequenceT[int]] = None) -> torch.Tensor:
        """Attention probabilities ``(B, heads, N, N)`` of input ``x`` ``(B, N, C)`` (rows: queries)."""
        return self._attend(x, shape, True)[1]

    def extra_repr(self):
        return f"dim={self.dim}, layout={self.layout!r}, heads={self.heads}, dim_head={self.dim_head}"


class Translution(_AttentionBase):
    """Translution attention layer (SPEC §1) with output projection.

    Args:
        dim: input/output channels ``C``.
        layout: :class:`~translution.layouts.Layout` of the tokens (fixes the bank size).
        heads: number of heads. dim_head: width per head (``C' = heads·dim_head``).
        relative: which projections are relative, any non-empty subset of ``"qkv"``.
        init: ``"reference"`` (banks U(±1/√(C·C')), as the paper's code) or ``"tied"`` (every
            slot starts from one Linear-style matrix: the layer then equals self-attention).
        backend: default backend for :func:`~translution.functional.translution`.
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
                 save_projections: bool = False):
        super().__init__(dim, as_layout(layout), heads, dim_head)
        self.save_projections = save_projections
        self.relative = "".join(p for p in "qkv" if p in parse_relative(relative))
        if init not in ("reference", "tied"):
            raise ValueError(f"init must be 'reference' or 'tied', got {init!r}")
        self.backend = backend
        slots = self.layout.num_slots
        for name in "qkv":
            if name not in self.relative:
                w = _linear_init(dim, self.inner)
            elif init == "tied":
                w = nn.Parameter(_linear_init(dim, self.inner).detach().expand(
                    slots, dim, self.inner).clone())
            else:
                w = _bank(slots, dim, self.inner)
            setattr(self, "w" + name, w)

    def forward(self, x: torch.Tensor, shape: Optional[SequenceT[int]] = None) -> torch.Tensor:
        return self.out(self._attend(x, shape, False))

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


class AlphaTranslution(_AttentionBase):
    """α-Translution (SPEC §3): self-attention plus a low-rank relative branch.

    Args:
        dim, layout, heads, dim_head: as :class:`Translution`.
        rank: per-head relative width ``r`` (branch width ``R = heads·r``; default 8).
        relative: relative subset of the low-rank branch (non-empty subset of ``"qkv"``).
        backend: default backend.
        save_projections: as :class:`Translution`.

    Parameters: ``wq/wk/wv (C, C')``; ``uq, uk (C, R)`` if q or k is relative; ``uv (C, R)`` and
    ``p (R, C')`` if v is; banks ``mq/mk/mv (slots, R, R)`` for the relative ones; ``out``.
    """

    def __init__(self, dim: int, layout: Layout, heads: int = 8, dim_head: int = 64,
                 rank: int = 8, relative: str = "qkv", backend=None,
                 save_projections: bool = False):
        super().__init__(dim, as_layout(layout), heads, dim_head)
        self.save_projections = save_projections
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        self.relative = "".join(p for p in "qkv" if p in parse_relative(relative))
        self.rank, self.backend = rank, backend
        width, slots = heads * rank, self.layout.num_slots
        for name in "qkv":
            setattr(self, "w" + name, _linear_init(dim, self.inner))
        if "q" in self.relative or "k" in self.relative:
            self.uq, self.uk = _linear_init(dim, width), _linear_init(dim, width)
        if "v" in self.relative:
            self.uv, self.p = _linear_init(dim, width), _linear_init(width, self.inner)
        for name in self.relative:
            setattr(self, "m" + name, _bank(slots, width, width))

    def forward(self, x: torch.Tensor, shape: Optional[SequenceT[int]] = None) -> torch.Tensor:
        return self.out(self._attend(x, shape, False))

    def _attend(self, x, shape, return_attention):
        self._check_x(x)
        extra = {name: getattr(self, name) for name in ("uq", "uk", "uv", "p", "mq", "mk", "mv")
                 if hasattr(self, name)}
        return functional.alpha_translution(x, self.wq, self.wk, self.wv,
                                            _layout_for(self.layout, shape), heads=self.heads,
                                            backend=self.backend,
                                            return_attention=return_attention,
                                            save_projections=self.save_projections, **extra)

    def extra_repr(self):
        return super().extra_repr() + f", rank={self.rank}, relative={self.relative!r}"


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
