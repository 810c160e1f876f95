"""Shared pieces of the model families: the attention factory, the pre-norm transformer
:class:`Block`, the :class:`MLP`, the common configuration fields and the model base class.

Attention kinds (``config.attention``, SPEC §5):

=============== ===========================================================================
``"ape"``        :class:`~translution.SelfAttention` without position encoding; the model adds
                 a learned absolute position embedding to its input tokens.
``"rope"``       ``SelfAttention(position="rope")``: 2-D RoPE on ViT grids, 1-D on GPT.
``"bias"``       ``SelfAttention(position="bias")``: a learned relative position bias per slot.
``"translution"`` :class:`~translution.Translution` (options ``relative``, ``init``,
                 ``parameterization``).
``"alpha"``      :class:`~translution.AlphaTranslution` (options ``rank``, ``relative``,
                 ``parameterization``).
``"lor_rope"``   the authors' latest variant (their ``lor_rope_translution``): α-Translution
                 with only the value path relative (``relative="v"``, whatever the config's
                 ``relative``) and RoPE on the standard queries and keys (2-D on ViT grids, the
                 class token unrotated; 1-D on GPT); options ``rank``, ``parameterization``.
``"hybrid"``     the first ``hybrid_blocks`` blocks use ``hybrid_kind`` (``"translution"``,
                 ``"alpha"`` or ``"lor_rope"``), the rest ``"rope"`` self-attention (causal in
                 GPT).
=============== ===========================================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence as SequenceT

import torch
from torch import nn

from ..backends import check_backend
from ..layers import (PARAMETERIZATIONS, AlphaTranslution, SelfAttention, Translution,
                      parse_relative)
from ..layouts import Layout

__all__ = ["ATTENTION_KINDS", "LAYER_KINDS", "RELATIVE_KINDS", "HYBRID_KINDS", "SIZES",
           "TransformerConfig", "MLP", "Block", "TransformerModel", "make_attention",
           "block_kinds"]

#: Values of ``config.attention``.
ATTENTION_KINDS = ("ape", "rope", "bias", "translution", "alpha", "lor_rope", "hybrid")
#: Per-block attention kinds accepted by :func:`make_attention`.
LAYER_KINDS = ("ape", "rope", "bias", "translution", "alpha", "lor_rope")
#: Layer kinds holding a per-slot table, hence tied to the layout's size (unless clipped).
RELATIVE_KINDS = ("bias", "translution", "alpha", "lor_rope")
#: Relative kinds a hybrid model may use in its leading blocks.
HYBRID_KINDS = ("translution", "alpha", "lor_rope")

#: Model sizes (SPEC §5 and §6). ``micro`` is for tests; ``mnist`` is the SPEC §6 MNIST model.
SIZES: Dict[str, Dict[str, int]] = {
    "micro": dict(dim=32, depth=2, heads=2, dim_head=16),
    "mnist": dict(dim=64, depth=6, heads=8, dim_head=64, mlp_dim=128),
    "tiny": dict(dim=192, depth=6, heads=3),
    "mini": dict(dim=192, depth=12, heads=3),
    "small": dict(dim=384, depth=12, heads=6),
    "base": dict(dim=768, depth=12, heads=12),
    "large": dict(dim=1024, depth=24, heads=16),
}


def _positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class TransformerConfig:
    """Fields shared by every model family.

    Attributes:
        dim: model width ``C``.
        depth: number of blocks.
        heads: attention heads.
        dim_head: width per head (``C' = heads·dim_head``; 64 in the paper).
        mlp_dim: MLP hidden width; ``None`` means ``mlp_ratio·dim``.
        mlp_ratio: MLP expansion when ``mlp_dim`` is ``None`` (4 in the paper).
        attention: one of :data:`ATTENTION_KINDS`.
        relative: relative subset of Translution / α-Translution (non-empty subset of ``"qkv"``;
            ``"lor_rope"`` layers always use ``"v"``).
        init: Translution bank init, ``"reference"`` or ``"tied"``.
        parameterization: Translution / α bank storage, ``"independent"`` (one free matrix per
            slot) or ``"residual"`` (a shared matrix plus a per-slot residual starting at zero).
        rank: α-Translution per-head relative width ``r``.
        hybrid_blocks: ``attention="hybrid"`` only: how many leading blocks are Translution (or
            α); ``None`` means ``max(1, depth // 2)``.
        hybrid_kind: ``"translution"``, ``"alpha"`` or ``"lor_rope"``, the relative kind of a
            hybrid model.
        max_distance: clip relative offsets to ``[−K, K]`` per axis (SPEC §2): banks stop depending
            on the input size, so the model runs on any image size / sequence length.
        rope_base: RoPE frequency base.
        backend: backend name for Translution layers (``None``: automatic).
        save_projections: Translution / α layers keep their relative projections for backward
            instead of recomputing them (10–30 % faster, ``B·P·C'`` floats per projection).
    """

    dim: int = 192
    depth: int = 6
    heads: int = 3
    dim_head: int = 64
    mlp_dim: Optional[int] = None
    mlp_ratio: float = 4.0
    attention: str = "translution"
    relative: str = "qkv"
    init: str = "reference"
    rank: int = 8
    hybrid_blocks: Optional[int] = None
    hybrid_kind: str = "translution"
    max_distance: Optional[int] = None
    rope_base: float = 10000.0
    backend: Optional[str] = None
    parameterization: str = "independent"
    save_projections: bool = False

    #: family name stored in :meth:`to_dict` (set by subclasses)
    family = "transformer"

    def __post_init__(self):
        for name in ("dim", "depth", "heads", "dim_head", "rank"):
            _positive_int(name, getattr(self, name))
        if self.mlp_dim is not None:
            _positive_int("mlp_dim", self.mlp_dim)
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) \
                or self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be a positive number, got {self.mlp_ratio!r}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        parse_relative(self.relative)
        if self.init not in ("reference", "tied"):
            raise ValueError(f"init must be 'reference' or 'tied', got {self.init!r}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, "
                             f"got {self.parameterization!r}")
        if self.hybrid_kind not in HYBRID_KINDS:
            raise ValueError(f"hybrid_kind must be one of {HYBRID_KINDS}, "
                             f"got {self.hybrid_kind!r}")
        if self.hybrid_blocks is not None:
            if self.attention != "hybrid":
                raise ValueError(f"hybrid_blocks only applies to attention='hybrid', "
                                 f"got attention={self.attention!r}")
            _positive_int("hybrid_blocks", self.hybrid_blocks, 0)
            if self.hybrid_blocks > self.depth:
                raise ValueError(f"hybrid_blocks must be <= depth={self.depth}, "
                                 f"got {self.hybrid_blocks}")
        if self.max_distance is not None:
            _positive_int("max_distance", self.max_distance, 0)
        if not isinstance(self.save_projections, bool):
            raise TypeError(f"save_projections must be a bool, got {self.save_projections!r}")
        if self.backend is not None and not isinstance(self.backend, str):
            raise TypeError(f"backend must be None or a backend name (a string) so the config "
                            f"can be saved, got {type(self.backend).__name__}")
        check_backend(self.backend)

    # -- derived values -----------------------------------------------------------------------
    @property
    def hidden_dim(self) -> int:
        """The MLP hidden width."""
        return self.mlp_dim if self.mlp_dim is not None else int(round(self.mlp_ratio * self.dim))

    @property
    def layer_kinds(self) -> List[str]:
        """The attention kind of every block (see :func:`block_kinds`)."""
        return block_kinds(self.attention, self.depth, self.hybrid_blocks, self.hybrid_kind)

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Plain dict of the fields plus ``family`` (for checkpoints and JSON)."""
        out = {"family": self.family}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Inverse of :meth:`to_dict` (``family`` is checked and dropped).

        Raises:
            ValueError: wrong family or unknown fields.
        """
        data = dict(data)
        family = data.pop("family", cls.family)
        if family != cls.family:
            raise ValueError(f"{cls.__name__} expects family {cls.family!r}, got {family!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown field(s) {unknown} for {cls.__name__}; "
                             f"valid fields are: {', '.join(sorted(names))}")
        return cls(**data)


def block_kinds(attention: str, depth: int, hybrid_blocks: Optional[int] = None,
                hybrid_kind: str = "translution") -> List[str]:
    """The attention kind of each of ``depth`` blocks.

    ``"hybrid"`` expands to ``hybrid_blocks`` (default ``max(1, depth // 2)``) times
    ``hybrid_kind`` followed by ``"rope"``; any other kind repeats.

    Example:
        >>> block_kinds("hybrid", 4, 1)
        ['translution', 'rope', 'rope', 'rope']
    """
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
    if attention != "hybrid":
        return [attention] * depth
    k = max(1, depth // 2) if hybrid_blocks is None else hybrid_blocks
    if not 0 <= k <= depth:
        raise ValueError(f"hybrid_blocks must be in [0, {depth}], got {k}")
    return [hybrid_kind] * k + ["rope"] * (depth - k)


def make_attention(kind: str, dim: int, layout: Optional[Layout], heads: int, dim_head: int, *,
                   relative: str = "qkv", init: str = "reference", rank: int = 8,
                   rope_base: float = 10000.0, backend: Optional[str] = None,
                   parameterization: str = "independent",
                   save_projections: bool = False) -> nn.Module:
    """Build the attention layer of one block.

    Args:
        kind: one of :data:`LAYER_KINDS` (``"hybrid"`` is a model-level kind; expand it with
            :func:`block_kinds`).
        dim, heads, dim_head: layer sizes.
        layout: the tokens' layout. ``"ape"`` may take ``None`` (unmasked attention without
            position); a causal layout makes every kind causal.
        relative, init: Translution options; ``relative`` and ``rank`` also configure α
            (``"lor_rope"``: ``rank`` only, its relative subset is ``"v"``).
        rope_base: RoPE base. backend: Translution backend.
        parameterization: bank storage of Translution and α (see :data:`PARAMETERIZATIONS`).
        save_projections: Translution and α keep their projections for backward.

    Returns:
        a module with ``forward(x (B, N, dim), shape=None) -> (B, N, dim)``.
    """
    if kind == "ape":
        return SelfAttention(dim, layout, heads, dim_head)
    if kind in ("rope", "bias"):
        return SelfAttention(dim, layout, heads, dim_head, position=kind, rope_base=rope_base)
    shared = dict(backend=backend, parameterization=parameterization,
                  save_projections=save_projections)
    if kind == "translution":
        return Translution(dim, layout, heads, dim_head, relative=relative, init=init, **shared)
    if kind == "alpha":
        return AlphaTranslution(dim, layout, heads, dim_head, rank=rank, relative=relative,
                                **shared)
    if kind == "lor_rope":
        return AlphaTranslution(dim, layout, heads, dim_head, rank=rank, relative="v",
                                position="rope", rope_base=rope_base, **shared)
    if kind == "hybrid":
        raise ValueError("'hybrid' is a model-level kind; expand it per block with block_kinds()")
    raise ValueError(f"attention kind must be one of {LAYER_KINDS}, got {kind!r}")


class MLP(nn.Module):
    """Linear → GELU → Linear.

    Shape:
        ``(..., dim) -> (..., dim)``
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` (no dropout).

    Args:
        dim: width. attention: the attention layer (see :func:`make_attention`).
        hidden_dim: MLP hidden width.

    Shape:
        ``forward(x (B, N, dim), shape=None) -> (B, N, dim)``; ``shape`` is passed to the
        attention layer (a grid layout run on another grid size).
    """

    def __init__(self, dim: int, attention: nn.Module, hidden_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden_dim)

    def forward(self, x: torch.Tensor, shape: Optional[SequenceT[int]] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), shape=shape)
        return x + self.mlp(self.norm2(x))

    def decode(self, x: torch.Tensor, cache=None, capacity: Optional[int] = None):
        """Incremental forward on a causal sequence: the attention layer's ``decode`` step.

        Args:
            x: ``(B, m, dim)`` the next ``m`` positions. cache: the attention layer's cache from
                the previous call (``None``: ``x`` starts the sequence). capacity: positions to
                preallocate in a new cache.

        Returns:
            ``(out (B, m, dim), cache)``, ``out`` equal to ``self(prefix)[:, -m:]``.
        """
        y, cache = self.attn.decode(self.norm1(x), cache, capacity)
        x = x + y
        return x + self.mlp(self.norm2(x)), cache


class TransformerModel(nn.Module):
    """Base class of the model families: holds ``config`` and counts parameters."""

    config: TransformerConfig

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameter elements (only those with ``requires_grad`` if asked)."""
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not trainable_only)

    def _build_blocks(self, layouts: SequenceT[Optional[Layout]]) -> nn.ModuleList:
        """One :class:`Block` per entry of ``config.layer_kinds`` on the given layouts."""
        c = self.config
        return nn.ModuleList(
            Block(c.dim, make_attention(kind, c.dim, layout, c.heads, c.dim_head,
                                        relative=c.relative, init=c.init, rank=c.rank,
                                        rope_base=c.rope_base, backend=c.backend,
                                        parameterization=c.parameterization,
                                        save_projections=c.save_projections),
                  c.hidden_dim)
            for kind, layout in zip(c.layer_kinds, layouts))

    def extra_repr(self) -> str:
        return f"attention={self.config.attention!r}, params={self.num_parameters():,}"


def _resolve_config(config_cls, config, overrides):
    """``config`` (instance, dict or ``None``) plus keyword overrides → a config instance."""
    from .registry import apply_overrides

    if config is None:
        config = config_cls()
    elif isinstance(config, Mapping):
        config = config_cls.from_dict(config)
    elif not isinstance(config, config_cls):
        raise TypeError(f"config must be a {config_cls.__name__} or a dict, "
                        f"got {type(config).__name__}")
    return apply_overrides(config, overrides)


def register_sizes(prefix: str, title: str, model_cls, config_cls, sizes: Mapping[str, dict]):
    """Register ``{prefix}_{size}_{kind}`` for every size in ``sizes`` (its extra config
    defaults) and every attention kind of :data:`ATTENTION_KINDS`."""
    from .registry import register_config

    for size, extra in sizes.items():
        for kind in ATTENTION_KINDS:
            config = config_cls(**SIZES[size], **extra, attention=kind)
            register_config(f"{prefix}_{size}_{kind}", model_cls, config,
                            f"{title}-{size} with {kind!r} attention; keyword overrides replace "
                            f"{config_cls.__name__} fields.")
