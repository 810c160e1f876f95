"""Functional Translution and α-Translution (SPEC §1 and §3): the source of truth the layers call.

Equivalent PyTorch for :func:`translution` (the literal definition; ``S`` = slot index)::

    q = einsum("bic,ijcd->bijd", x, wq[layout.slot_index()])       # q_ij = x_i Wq[slot(i,j)]
    k = einsum("bjc,ijcd->bijd", x, wk[layout.key_slot_index()])   # k_ij = x_j Wk[slot(j,i)]
    v = einsum("bjc,ijcd->bijd", x, wv[layout.slot_index()])       # v_ij = x_j Wv[slot(i,j)]
    a = (q * k).unflatten(-1, (heads, -1)).sum(-1) * scale         # (B, N, N, heads)
    a = a.masked_fill(~allowed[..., None], -inf).softmax(dim=2)     # over keys j
    y = einsum("bijh,bijhd->bihd", a, v.unflatten(-1, (heads, -1))).flatten(-2)

The default backend computes exactly this without building any of those pair tensors.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from .backends import Backend, select_backend
from .backends.base import split_heads
from .layouts import Layout, as_layout

__all__ = ["translution", "alpha_translution"]

BackendArg = Union[None, str, Backend]


def _check_input(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x must have shape (batch, tokens, channels), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")


def _check_weight(name: str, w, x: torch.Tensor, layout: Layout, in_dim: int,
                  allow_bank: bool = True) -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if w.device != x.device:
        raise ValueError(f"{name} is on {w.device} but x is on {x.device}")
    if _compute_dtype(w) != _compute_dtype(x):
        raise TypeError(f"{name} has dtype {w.dtype} but x has dtype {x.dtype}; they must match "
                        "(use torch.autocast for mixed precision)")
    if w.dim() == 3 and allow_bank:
        if w.shape[0] != layout.num_slots or w.shape[1] != in_dim:
            raise ValueError(f"{name} bank must have shape ({layout.num_slots}, {in_dim}, C') for "
                             f"{layout!r} and {in_dim} input channels, got {tuple(w.shape)}")
    elif w.dim() == 2:
        if w.shape[0] != in_dim:
            raise ValueError(f"{name} must have shape ({in_dim}, C'), got {tuple(w.shape)}")
    else:
        kinds = "a bank (slots, C, C') or a matrix (C, C')" if allow_bank else "a matrix"
        raise ValueError(f"{name} must be {kinds}, got shape {tuple(w.shape)}")


def _resolve_layout(layout, x: torch.Tensor) -> Layout:
    return as_layout(layout).for_tokens(x.shape[1])


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype ``t`` is used in: float32 becomes the autocast dtype when autocast is on for its
    device (so a bf16 activation meets float32 weights as in ``nn.Linear``); others stay."""
    if t.dtype == torch.float32 and t.device.type in ("cpu", "cuda", "xpu", "mps", "hpu") \
            and torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def _autocast(*tensors):
    """Cast each tensor to :func:`_compute_dtype` (a no-op without autocast)."""
    return tuple(t if t is None else t.to(_compute_dtype(t)) for t in tensors)


def _plain_scores(q: torch.Tensor, k: torch.Tensor, layout: Layout, heads: int, scale: float,
                  rotary: Optional[Callable] = None):
    """Ordinary attention logits ``(B, heads, N, N)``, formed in float32 or wider (fp16 products
    overflow once |x| reaches about 1e3), masked if causal; ``rotary`` (if given) maps the
    per-head ``q`` and ``k`` ``(B, heads, N, dh)`` first."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    q = split_heads(q.to(dtype), heads).transpose(1, 2)          # (B, heads, N, dh)
    k = split_heads(k.to(dtype), heads).transpose(1, 2)
    if rotary is not None:
        q, k = rotary(q), rotary(k)
    scores = (q @ k.transpose(-1, -2)) * scale
    allowed = layout.allowed()
    if allowed is not None:
        scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
    return scores


def _plain_mix(attn: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    v = split_heads(v, heads).transpose(1, 2)                    # (B, heads, N, dh)
    return (attn.to(v.dtype) @ v).transpose(1, 2).flatten(-2)    # (B, N, C')


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def translution(x: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor,
                layout: Layout, *, heads: int, scale: Optional[float] = None,
                backend: BackendArg = None, return_attention: bool = False,
                save_projections: bool = False):
    """Translution attention (SPEC §1), without the output projection.

    Args:
        x: ``(B, N, C)`` tokens in the layout's order.
        wq, wk, wv: each a bank ``(layout.num_slots, C, C')`` (that projection is relative) or a
            plain ``(C, C')`` matrix (it is not). At least one must be a bank.
        layout: a :class:`~translution.layouts.Layout`; sequences adapt to shorter inputs.
        heads: number of heads; ``C'`` must be divisible by it.
        scale: logit scale, default ``(C'/heads) ** -0.5``.
        backend: ``None`` (the first of ``batched``, ``grouped``, ``reference`` that supports
            the inputs), one of those names, or a :class:`~translution.backends.Backend`.
        return_attention: also return the attention probabilities ``α`` ``(B, heads, N, N)``.
        save_projections: keep the relative projections for backward instead of recomputing
            them (faster; ``B·P·C'`` more floats per relative projection, ``P`` attended pairs).

    Returns:
        ``(B, N, C')``, in the input dtype (the autocast dtype under autocast); with
        ``return_attention``, the pair ``(output, α)``.
    """
    _check_input(x)
    layout = _resolve_layout(layout, x)
    for name, w in (("wq", wq), ("wk", wk), ("wv", wv)):
        _check_weight(name, w, x, layout, x.shape[-1])
    if all(w.dim() == 2 for w in (wq, wk, wv)):
        raise ValueError("translution needs at least one relative projection (a 3-d bank); "
                         "with three plain matrices use torch.nn.functional."
                         "scaled_dot_product_attention")
    inner = _check_heads(heads, wq, wk, wv)
    scale = (inner // heads) ** -0.5 if scale is None else float(scale)
    impl = select_backend(backend, layout, x, [wq, wk, wv])
    save = _save_option(save_projections)
    x, wq, wk, wv = _autocast(x, wq, wk, wv)
    with _no_autocast(x.device):
        if wq.dim() == 2 and wk.dim() == 2:
            scores = _plain_scores(x @ wq, x @ wk, layout, heads, scale)
        else:
            scores = impl.pair_scores(x, x, wq, wk, layout, heads, scale, **save)
        attn = torch.softmax(scores, dim=-1)                      # (B, heads, N, N), float32+
        if wv.dim() == 2:
            out = _plain_mix(attn, x @ wv, heads)
        else:
            out = impl.pair_mix(attn, x, wv, layout, heads, **save)
    return (out, attn) if return_attention else out


def _save_option(save_projections) -> dict:
    """The backend keyword for ``save_projections`` (omitted when off, the default)."""
    if not isinstance(save_projections, bool):
        raise TypeError(f"save_projections must be a bool, got {save_projections!r}")
    return {"save_projections": True} if save_projections else {}


def _check_heads(heads, *weights) -> int:
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"heads must be a positive int, got {heads!r}")
    widths = {w.shape[-1] for w in weights if w is not None}
    if len(widths) != 1:
        raise ValueError(f"wq, wk and wv must have the same output width C', got {sorted(widths)}")
    inner = widths.pop()
    if inner == 0:
        raise ValueError("output width C' must be positive, got weights with 0 output columns")
    if inner % heads:
        raise ValueError(f"output width C'={inner} is not divisible by heads={heads}")
    return inner


def _check_low_rank(x, layout, heads, inner, rel_qk, rel_v, uq, uk, uv, mq, mk, mv, p) -> None:
    """Shapes of α-Translution's low-rank branch: U ``(C, R)``, M banks ``(slots, R, R)``,
    P ``(R, C')``, for the chosen relative subset."""
    c = x.shape[-1]
    need = ([("uq", uq), ("uk", uk)] if rel_qk else []) + ([("uv", uv)] if rel_v else [])
    for name, u in need:
        if u is None:
            raise ValueError(f"{name} (C, R) is required for the chosen relative subset")
        _check_weight(name, u, x, layout, c, allow_bank=False)
    rank = need[0][1].shape[1]
    if any(u.shape[1] != rank for _, u in need):
        raise ValueError(f"uq/uk/uv must share the relative width R, got "
                         f"{[tuple(u.shape) for _, u in need]}")
    if rank % heads:
        raise ValueError(f"relative width R={rank} is not divisible by heads={heads}")
    for name, m in (("mq", mq), ("mk", mk), ("mv", mv)):
        if m is not None:
            _check_weight(name, m, x, layout, rank)
            if m.dim() != 3 or m.shape[2] != rank:
                raise ValueError(f"{name} must be a bank ({layout.num_slots}, {rank}, {rank}), "
                                 f"got {tuple(m.shape)}")
    if rel_v:
        if p is None:
            raise ValueError(f"p ({rank}, {inner}) is required when mv is given")
        _check_weight("p", p, x, layout, rank, allow_bank=False)
        if p.shape[1] != inner:
            raise ValueError(f"p must have shape ({rank}, {inner}), got {tuple(p.shape)}")


def alpha_translution(x: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor,
                      layout: Layout, *, heads: int,
                      uq: Optional[torch.Tensor] = None, uk: Optional[torch.Tensor] = None,
                      uv: Optional[torch.Tensor] = None, mq: Optional[torch.Tensor] = None,
                      mk: Optional[torch.Tensor] = None, mv: Optional[torch.Tensor] = None,
                      p: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                      backend: BackendArg = None, return_attention: bool = False,
                      save_projections: bool = False,
                      rotary: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
    """α-Translution (SPEC §3): self-attention plus a low-rank relative branch, without the
    output projection.

    The relative subset is given by which banks are passed: ``mq``/``mk``/``mv`` ``(slots, R, R)``.
    If ``mq`` or ``mk`` is given, both ``uq`` and ``uk`` ``(C, R)`` are needed (a side without a
    bank uses its plain low-rank projection); ``mv`` needs ``uv`` ``(C, R)`` and ``p`` ``(R, C')``.

    Args:
        x: ``(B, N, C)``.
        wq, wk, wv: standard projections ``(C, C')``.
        layout, heads, scale, backend, return_attention, save_projections: as in
            :func:`translution` (``scale``
            defaults to ``dim_head ** -0.5`` with ``dim_head = C'/heads``; the relative heads
            have width ``R/heads``).
        rotary: optional map applied to the standard branch's queries and keys, each split into
            heads ``(B, heads, N, dh)``, before the logits (e.g. rotary position embedding; the
            relative branch is not rotated).

    Returns:
        ``(B, N, C')``: ``Σ_j α_ij v_j`` or ``(Σ_j α_ij v_j + P Σ_j α_ij ṽ_ij) / 2``; with
        ``return_attention``, the pair ``(output, α)``.
    """
    _check_input(x)
    layout = _resolve_layout(layout, x)
    c = x.shape[-1]
    for name, w in (("wq", wq), ("wk", wk), ("wv", wv)):
        _check_weight(name, w, x, layout, c, allow_bank=False)
    inner = _check_heads(heads, wq, wk, wv)
    rel_qk, rel_v = mq is not None or mk is not None, mv is not None
    if not (rel_qk or rel_v):
        raise ValueError("alpha_translution needs at least one relative bank (mq, mk or mv)")
    _check_low_rank(x, layout, heads, inner, rel_qk, rel_v, uq, uk, uv, mq, mk, mv, p)
    if rotary is not None and not callable(rotary):
        raise TypeError(f"rotary must be None or a callable, got {type(rotary).__name__}")
    scale = (inner // heads) ** -0.5 if scale is None else float(scale)
    impl = select_backend(backend, layout, x, [mq, mk, mv])
    save = _save_option(save_projections)
    x, wq, wk, wv, uq, uk, uv, mq, mk, mv, p = _autocast(x, wq, wk, wv, uq, uk, uv, mq, mk, mv, p)
    with _no_autocast(x.device):
        if rel_qk:
            scores = _plain_scores(x @ wq, x @ wk, layout, heads, scale / 2, rotary)
            scores = scores + impl.pair_scores(x @ uq, x @ uk, mq, mk, layout, heads, scale / 2,
                                               **save)
        else:
            scores = _plain_scores(x @ wq, x @ wk, layout, heads, scale, rotary)
        attn = torch.softmax(scores, dim=-1)
        out = _plain_mix(attn, x @ wv, heads)
        if rel_v:
            out = (out + impl.pair_mix(attn, x @ uv, mv, layout, heads, **save) @ p) / 2
    return (out, attn) if return_attention else out
