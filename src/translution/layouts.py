"""Token layouts: where each token sits, and which bank slot every (query, key) pair uses.

A layout turns token positions into relative offsets ``δ(i, j) = p(i) − p(j)`` and offsets into
*slots* (rows of a weight bank). The slot numbering below is a public contract (SPEC §2):
checkpoints and weight conversion depend on it.

* ``Sequence(L)`` (bidirectional): ``slot = δ + (L − 1)``, ``2L − 1`` slots.
* ``Sequence(L, causal=True)``: only ``j ≤ i`` is attended; ``slot = i − j``, ``L`` slots; q, k
  and v of a pair all use that slot.
* ``Grid(H, W)``: row-major tokens, ``slot = (δr + H − 1)·(2W − 1) + (δc + W − 1)``; N-d grids
  use the same mixed radix, last axis fastest.
* ``cls_token=True`` (grids): token 0 has no position; with ``R`` grid slots,
  ``slot(cls, cls) = R``, ``slot(cls, patch) = R + 1``, ``slot(patch, cls) = R + 2``.
* ``max_distance=K`` clamps every axis of δ to ``[−K, K]``: the bank then has ``2K + 1`` slots per
  axis whatever the size, and the layout runs on any size (see :meth:`with_shape`).
* ``symmetric=True`` maps δ and −δ to one slot (distance without direction). The symmetric slot
  is the distance of the unsymmetric slot from the centre slot (δ = 0), so δ = 0 is slot 0 and
  a 1-D sequence uses slot ``|δ|``. Class-token slots stay directional.
* ``Grid(..., circular=True)`` wraps offsets around each axis (a torus): per axis
  ``δ ← δ mod size``, ``slot`` = mixed radix of those (last axis fastest; ``δr·W + δc`` in 2-D),
  ``prod(shape)`` slots, class-token slots after. Not combined with ``max_distance`` or
  ``symmetric``; it cannot be resized.

Layouts are immutable and hashable; every method that builds an index map is cached.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch

from .utils import check_bool

__all__ = ["Layout", "Sequence", "Grid", "PairGroup"]


@dataclass(frozen=True)
class PairGroup:
    """All (query, key) pairs that share one geometric relation, hence one slot per projection.

    ``kind`` is ``"grid"`` (query and key are positioned tokens ``offset`` apart),
    ``"cls_cls"``, ``"cls_query"`` (the class token queries every positioned token) or
    ``"cls_key"`` (every positioned token queries the class token).
    ``slot_q``/``slot_v`` are ``slot(i, j)`` and ``slot_k`` is the key's slot (``slot(j, i)``,
    or ``slot(i, j)`` for causal layouts).
    """

    kind: str
    offset: Tuple[int, ...]
    slot_q: int
    slot_k: int
    slot_v: int


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class Layout:
    """Positions of ``N`` tokens on a regular grid (1-D sequences included), plus an optional
    class token, and the slot map of SPEC §2.

    Attributes:
        shape: the positioned tokens' grid shape (``(L,)`` for a sequence).
        extent: the shape the unclipped slot numbering is built for (``shape`` unless the
            layout was resized with :meth:`with_shape`).
        causal, cls_token, max_distance, symmetric, circular: see the module docstring.
    """

    def __init__(self, shape: Tuple[int, ...], extent: Tuple[int, ...], *, causal: bool,
                 cls_token: bool, max_distance: Optional[int], symmetric: bool,
                 circular: bool = False):
        self.shape = tuple(shape)
        self.extent = tuple(extent)
        self.causal = bool(causal)
        self.cls_token = bool(cls_token)
        self.max_distance = max_distance
        self.symmetric = bool(symmetric)
        self.circular = bool(circular)
        # Per-axis radius of the offsets a bank stores.
        if max_distance is None:
            self.radii = tuple(e - 1 for e in self.extent)
        else:
            self.radii = tuple(max_distance for _ in self.extent)

    # -- identity -------------------------------------------------------------------------
    def _key(self):
        return (type(self).__name__, self.shape, self.extent, self.causal, self.cls_token,
                self.max_distance, self.symmetric, self.circular)

    def __eq__(self, other):
        return isinstance(other, Layout) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    # -- sizes ----------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of positional axes."""
        return len(self.shape)

    @property
    def num_positioned(self) -> int:
        """Number of tokens with a position (everything but the class token)."""
        return math.prod(self.shape)

    @property
    def num_tokens(self) -> int:
        """``N``: tokens the layout holds, class token included."""
        return self.num_positioned + int(self.cls_token)

    @property
    def num_offset_slots(self) -> int:
        """Slots used by positioned pairs (``R`` of SPEC §2)."""
        if self.causal:
            return self.radii[0] + 1
        if self.circular:
            return math.prod(self.extent)
        full = math.prod([2 * r + 1 for r in self.radii])
        return (full + 1) // 2 if self.symmetric else full

    @property
    def num_slots(self) -> int:
        """Rows of a relative weight bank for this layout."""
        return self.num_offset_slots + (3 if self.cls_token else 0)

    @property
    def num_pairs(self) -> int:
        """Attended (query, key) pairs: ``N²``, or ``N(N+1)/2`` when causal."""
        n = self.num_tokens
        return n * (n + 1) // 2 if self.causal else n * n

    # -- slots ----------------------------------------------------------------------------
    def offset_slots(self, delta: torch.Tensor) -> torch.Tensor:
        """Slot of each offset vector.

        Args:
            delta: ``(..., ndim)`` integer offsets ``p(i) − p(j)``.

        Returns:
            ``(...)`` long tensor of slots (``slot(i, j)``).
        """
        delta = delta.long()
        if self.causal:
            return delta[..., 0].clamp(0, self.radii[0])
        slot = torch.zeros(delta.shape[:-1], dtype=torch.long, device=delta.device)
        if self.circular:
            for axis, size in enumerate(self.extent):
                slot = slot * size + delta[..., axis].remainder(size)
            return slot
        for axis, radius in enumerate(self.radii):
            slot = slot * (2 * radius + 1) + delta[..., axis].clamp(-radius, radius) + radius
        if self.symmetric:
            centre = (math.prod([2 * r + 1 for r in self.radii]) - 1) // 2
            slot = (slot - centre).abs()
        return slot

    def _offset_slot(self, offset: Tuple[int, ...]) -> int:
        return int(self.offset_slots(torch.tensor(offset).view(1, -1))[0])

    @functools.cached_property
    def positions(self) -> torch.Tensor:
        """``(num_positioned, ndim)`` grid coordinates of the positioned tokens (row-major)."""
        axes = [torch.arange(s) for s in self.shape]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, self.ndim)

    @functools.cached_property
    def _slot_index(self) -> torch.Tensor:
        pos = self.positions
        grid = self.offset_slots(pos[:, None, :] - pos[None, :, :])
        if not self.cls_token:
            return grid
        n, r = self.num_tokens, self.num_offset_slots
        index = torch.empty(n, n, dtype=torch.long)
        index[1:, 1:] = grid
        index[0, 0] = r
        index[0, 1:] = r + 1
        index[1:, 0] = r + 2
        return index

    def slot_index(self) -> torch.Tensor:
        """``(N, N)`` long tensor: ``slot(i, j)`` used by the query and value of pair (i, j)."""
        return self._slot_index.clone()

    def key_slot_index(self) -> torch.Tensor:
        """``(N, N)`` long tensor: the slot of the key of pair (i, j), ``slot(j, i)``
        (``slot(i, j)`` for causal layouts, whose banks store the key under the distance)."""
        return self.slot_index() if self.causal else self._slot_index.t().clone()

    def allowed(self) -> Optional[torch.Tensor]:
        """``(N, N)`` bool mask of attended pairs (``j ≤ i``) for causal layouts, else ``None``."""
        if not self.causal:
            return None
        n = self.num_tokens
        return torch.ones(n, n, dtype=torch.bool).tril()

    def pair_groups(self) -> Iterator[PairGroup]:
        """Every attended pair exactly once, grouped by geometric relation (see :class:`PairGroup`).

        Grid groups iterate over all geometric offsets of the actual shape (several offsets may
        share a slot when clipped, symmetric or circular: a circular slot is the union of up to
        ``2**ndim`` rectangles with offsets ``d`` or ``d − size`` per axis)."""
        if self.causal:
            for d in range(self.shape[0]):
                s = self._offset_slot((d,))
                yield PairGroup("grid", (d,), s, s, s)
        else:
            ranges = [range(-(s - 1), s) for s in self.shape]
            for offset in _product(ranges):
                s = self._offset_slot(offset)
                yield PairGroup("grid", offset, s, self._offset_slot(tuple(-o for o in offset)), s)
        if self.cls_token:
            r = self.num_offset_slots
            yield PairGroup("cls_cls", (), r, r, r)
            yield PairGroup("cls_query", (), r + 1, r + 2, r + 1)
            yield PairGroup("cls_key", (), r + 2, r + 1, r + 2)

    # -- resizing -------------------------------------------------------------------------
    def with_shape(self, *shape: int) -> "Layout":
        """The same slot numbering on another grid shape.

        Allowed when every axis fits the bank's extent, or always with ``max_distance``; a
        circular layout only runs on its own shape (its offsets wrap at the grid's size).

        Raises:
            ValueError: the shape has the wrong rank or does not fit the bank.
        """
        shape = tuple(shape)
        if len(shape) != self.ndim:
            raise ValueError(f"expected a shape with {self.ndim} axes, got {shape}")
        for s in shape:
            _check_int("every axis size", s, 1)
        if self.circular and shape != self.extent:
            raise ValueError(f"a circular layout wraps offsets at its own shape {self.extent} "
                             f"and cannot run on shape {shape}; build Grid(*{shape}, "
                             "circular=True) instead")
        if self.max_distance is None and any(s > e for s, e in zip(shape, self.extent)):
            raise ValueError(
                f"shape {shape} does not fit this layout's bank (built for {self.extent}); "
                "pass max_distance=K when building the layout to run on any size")
        return type(self)._from_parts(shape, self.extent, causal=self.causal,
                                      cls_token=self.cls_token, max_distance=self.max_distance,
                                      symmetric=self.symmetric, circular=self.circular)

    def for_tokens(self, num_tokens: int) -> "Layout":
        """The layout for an input of ``num_tokens`` tokens (sequences adapt their length,
        grids must match exactly).

        Raises:
            ValueError: the layout cannot hold that many tokens.
        """
        if num_tokens == self.num_tokens:
            return self
        raise ValueError(
            f"layout {self!r} holds {self.num_tokens} tokens, the input has {num_tokens}; "
            "build the layout for this size or use layout.with_shape(...)")

    @classmethod
    def _from_parts(cls, shape, extent, **kw) -> "Layout":
        obj = cls.__new__(cls)
        Layout.__init__(obj, shape, extent, **kw)
        return obj

    def _options_repr(self) -> str:
        parts = []
        if self.cls_token:
            parts.append("cls_token=True")
        if self.causal:
            parts.append("causal=True")
        if self.max_distance is not None:
            parts.append(f"max_distance={self.max_distance}")
        if self.symmetric:
            parts.append("symmetric=True")
        if self.circular:
            parts.append("circular=True")
        if self.extent != self.shape:
            parts.append(f"extent={self.extent}")
        return "".join(", " + p for p in parts)


def _product(ranges):
    if not ranges:
        yield ()
        return
    for first in ranges[0]:
        for rest in _product(ranges[1:]):
            yield (first,) + rest


class Sequence(Layout):
    """A 1-D sequence of ``length`` tokens.

    Args:
        length: tokens the bank is built for. An input may be shorter; with ``max_distance`` it
            may be any length and ``length`` may be ``None``.
        causal: attend only to ``j ≤ i`` (banks then have ``length`` slots indexed by ``i − j``).
        max_distance: clamp offsets to ``[−K, K]`` (``[0, K]`` when causal).
        symmetric: one slot for δ and −δ (no effect when causal).

    Example:
        >>> Sequence(4, causal=True).slot_index()[3]
        tensor([3, 2, 1, 0])
    """

    def __init__(self, length: Optional[int] = None, causal: bool = False,
                 max_distance: Optional[int] = None, symmetric: bool = False):
        check_bool("causal", causal)
        check_bool("symmetric", symmetric)
        if max_distance is not None:
            _check_int("max_distance", max_distance, 0)
        if length is None:
            if max_distance is None:
                raise ValueError("Sequence needs a length, or max_distance to run on any length")
            length = max_distance + 1
        _check_int("length", length, 1)
        super().__init__((length,), (length,), causal=causal, cls_token=False,
                         max_distance=max_distance, symmetric=symmetric and not causal)

    @property
    def length(self) -> int:
        return self.shape[0]

    def for_tokens(self, num_tokens: int) -> "Layout":
        if num_tokens == self.length:
            return self
        if num_tokens < 1:
            raise ValueError(f"a sequence needs at least 1 token, got {num_tokens}")
        if self.max_distance is None and num_tokens > self.extent[0]:
            raise ValueError(
                f"sequence of {num_tokens} tokens is longer than this layout allows "
                f"(length={self.extent[0]}); use max_distance=K to run on any length")
        return self.with_shape(num_tokens)

    def __repr__(self):
        return f"Sequence({self.length}{self._options_repr()})"


class Grid(Layout):
    """A row-major N-d grid of tokens (``Grid(H, W)`` for images), optionally after a class token.

    Args:
        *shape: grid size per axis (``H, W`` for 2-D; any number of axes ≥ 1).
        cls_token: a class token at index 0 (three extra slots, SPEC §2).
        max_distance: clamp each axis of δ to ``[−K, K]``.
        symmetric: one slot for δ and −δ.
        circular: wrap offsets around each axis (a torus, ``prod(shape)`` slots); the layer is
            then exactly equivariant to circular shifts of the grid. Excludes ``max_distance``
            and ``symmetric``.

    Example:
        >>> Grid(14, 14, cls_token=True).num_slots   # 27 * 27 + 3
        732
        >>> Grid(14, 14, cls_token=True, circular=True).num_slots   # 14 * 14 + 3
        199
    """

    def __init__(self, *shape: int, cls_token: bool = False, max_distance: Optional[int] = None,
                 symmetric: bool = False, circular: bool = False):
        for name, flag in (("cls_token", cls_token), ("symmetric", symmetric),
                           ("circular", circular)):
            check_bool(name, flag)
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if not shape:
            raise ValueError("Grid needs at least one axis size, e.g. Grid(14, 14)")
        for s in shape:
            _check_int("every grid axis size", s, 1)
        if max_distance is not None:
            _check_int("max_distance", max_distance, 0)
        if circular and (max_distance is not None or symmetric):
            raise ValueError("circular=True cannot be combined with max_distance or symmetric "
                             f"(got max_distance={max_distance!r}, symmetric={symmetric!r})")
        super().__init__(tuple(shape), tuple(shape), causal=False, cls_token=cls_token,
                         max_distance=max_distance, symmetric=symmetric, circular=circular)

    def __repr__(self):
        return f"Grid({', '.join(map(str, self.shape))}{self._options_repr()})"


def as_layout(layout) -> Layout:
    """Check that ``layout`` is a :class:`Layout` (a clear ``TypeError`` otherwise)."""
    if not isinstance(layout, Layout):
        raise TypeError(f"expected a translution.layouts.Layout (Sequence or Grid), "
                        f"got {type(layout).__name__}")
    return layout
