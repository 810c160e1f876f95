"""Dynamic MNIST: digits pasted at fixed or random places on a larger blank canvas (SPEC section 7).

Each ``d x d`` digit (28x28 for MNIST) is pasted on a blank ``canvas x canvas`` image. Placements:

* ``"static"``: one fixed, patch-aligned position for every image, the patch-aligned offset
  nearest the centre offset ``(canvas - d) / 2`` (ties go to the smaller offset). For the default
  ``canvas=42, patch=7`` the centre offset 7 is itself aligned, so the digit covers canvas rows and
  columns 7..34, i.e. patches 1..4 of the 6x6 patch grid.
* ``"patch"``: a random patch-aligned offset ``k * patch`` per axis, ``0 <= k * patch <= canvas - d``.
* ``"pixel"``: a random offset ``0..canvas - d`` per axis, in pixels.
* ``"roll"``: the static image rolled circularly (a torus) by a random whole number of patches
  ``0..canvas/patch - 1`` per axis; the digit may wrap around the canvas edges. A model with a
  circular layout sees the same patches in a rotated order.

A fixed ``shift=(dr, dc)`` (pixels) moves every digit of a ``"static"`` set by that displacement
from the static position (the shift sweep). Except for ``"roll"`` the digit is always fully
inside the canvas. The offset of item ``i`` is a pure function of
``(seed, epoch, i)`` computed with a SplitMix64 hash (independent of torch's RNG state, the number
of workers, and the data set length), so training placements change with :meth:`DynamicMNIST.set_epoch`
and are exactly reproducible when resuming. Test sets use a fixed seed and epoch 0.

Pixels are scaled to [0, 1] and normalised with the MNIST mean/std; the background is blank
(pixel 0), so it equals the normalised zero value ``-0.1307 / 0.3081``.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils import check_int
from .mnist import MNIST_MEAN, MNIST_STD

__all__ = ["DynamicMNIST", "PLACEMENTS", "static_offset", "placement_offsets"]

#: Valid placement modes.
PLACEMENTS = ("static", "patch", "pixel", "roll")

_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser applied elementwise to a uint64 array (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash_stream(seed: int, epoch: int, indices: np.ndarray, stream: int) -> np.ndarray:
    """Deterministic uint64 hash of (seed, epoch, index, stream), elementwise over ``indices``."""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))
        key = _splitmix64(key ^ np.uint64(epoch & _MASK64))
        key = _splitmix64(key ^ np.uint64(stream))
        return _splitmix64(key ^ indices.astype(np.uint64))


def static_offset(canvas: int, digit: int, patch: int) -> int:
    """The patch-aligned offset nearest the centre, ties towards the smaller offset.

    Args:
        canvas: Canvas side in pixels.
        digit: Digit side in pixels (``<= canvas``).
        patch: Patch side in pixels.

    Returns:
        ``k * patch`` minimising ``|k * patch - (canvas - digit) / 2|`` over
        ``0 <= k * patch <= canvas - digit``.
    """
    free = canvas - digit
    ks = np.arange(free // patch + 1)
    k = int(ks[np.argmin(np.abs(2 * ks * patch - free))])  # argmin picks the first (smaller) tie
    return k * patch


def placement_offsets(n: int, canvas: int, digit: int, patch: int, placement: str, seed: int,
                      epoch: int) -> torch.Tensor:
    """Offsets of items ``0..n-1`` for the given placement, seed and epoch.

    Args:
        n: Number of items.
        canvas: Canvas side in pixels.
        digit: Digit side in pixels.
        patch: Patch side in pixels.
        placement: One of :data:`PLACEMENTS`.
        seed: Placement seed.
        epoch: Epoch number (ignored for ``"static"``).

    Returns:
        ``(n, 2)`` int64 tensor of (row, column) offsets of the digit's top-left corner, in
        ``0..canvas - 1`` (``"roll"``: the digit wraps around the canvas edges).
    """
    free = canvas - digit
    off = static_offset(canvas, digit, patch)
    if placement == "static":
        return torch.full((n, 2), off, dtype=torch.long)
    idx = np.arange(n, dtype=np.uint64)
    choices = {"patch": free // patch + 1, "pixel": free + 1, "roll": canvas // patch}[placement]
    rows = _hash_stream(seed, epoch, idx, 0) % np.uint64(choices)
    cols = _hash_stream(seed, epoch, idx, 1) % np.uint64(choices)
    out = np.stack([rows, cols], axis=1).astype(np.int64)
    if placement == "patch":
        out *= patch
    elif placement == "roll":
        out = (out * patch + off) % canvas
    return torch.from_numpy(out)


class DynamicMNIST(Dataset):
    """Digits pasted on a blank canvas at static, patch-aligned random, or pixel random offsets.

    Args:
        images: ``(N, d, d)`` uint8 tensor of digits (``d = 28`` for MNIST), values ``0..255``.
        labels: ``(N,)`` integer tensor (or sequence) of class labels.
        canvas: Canvas side in pixels, ``>= d``. Default 42 (a 6x6 grid of 7-pixel patches).
        patch: Patch side of the model, used for aligned placements. Default 7.
        placement: One of :data:`PLACEMENTS` (see the module docstring).
        seed: Seed of the random placements. Use a fixed seed (and epoch 0) for test sets.
        shift: ``(dr, dc)`` pixels added to the static position (``"static"`` only); the digit
            must stay inside the canvas.

    Items are ``(x, y)``: ``x`` is a float32 ``(1, canvas, canvas)`` tensor normalised with the
    MNIST mean/std (background ``-0.1307/0.3081``), ``y`` a 0-d int64 tensor.

    Raises:
        TypeError: For wrongly typed arguments.
        ValueError: For mismatched sizes, an unknown placement, ``canvas < d``, (aligned
            placements) ``canvas`` not divisible by ``patch``, or a shift that leaves the canvas.
    """

    def __init__(self, images: torch.Tensor, labels: Union[torch.Tensor, Sequence[int]],
                 canvas: int = 42, patch: int = 7, placement: str = "static",
                 seed: int = 0, shift: Tuple[int, int] = (0, 0)) -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8 (0..255), got dtype {images.dtype}")
        if images.dim() != 3 or images.shape[1] != images.shape[2]:
            raise ValueError(f"images must have shape (N, d, d), got {tuple(images.shape)}")
        labels = torch.as_tensor(labels)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got "
                             f"{tuple(labels.shape)}")
        canvas = check_int("canvas", canvas, 1)
        patch = check_int("patch", patch, 1)
        seed = check_int("seed", seed, 0)
        if not isinstance(placement, str) or placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        digit = int(images.shape[1])
        if canvas < digit:
            raise ValueError(f"canvas must be >= the digit size {digit}, got canvas={canvas}")
        if placement != "pixel" and canvas % patch != 0:
            raise ValueError(f"placement {placement!r} needs canvas divisible by patch, got "
                             f"canvas={canvas}, patch={patch} (remainder {canvas % patch})")
        shift = self._check_shift(shift, placement, canvas, digit, patch)
        self.images = images
        self.labels = labels.long()
        self.canvas = canvas
        self.patch = patch
        self.placement = placement
        self.seed = seed
        self.shift = shift
        self.digit = digit
        self.background = (0.0 - MNIST_MEAN) / MNIST_STD
        self.epoch = 0
        self._offsets = self._placements(0)

    @staticmethod
    def _check_shift(shift, placement: str, canvas: int, digit: int, patch: int
                     ) -> Tuple[int, int]:
        if not isinstance(shift, (tuple, list)) or len(shift) != 2:
            raise TypeError(f"shift must be a (dr, dc) pair of ints, got {shift!r}")
        shift = (check_int("shift[0]", shift[0]), check_int("shift[1]", shift[1]))
        if shift == (0, 0):
            return shift
        if placement != "static":
            raise ValueError(f"shift applies to placement 'static' only, got {placement!r}")
        base = static_offset(canvas, digit, patch)
        for value in shift:
            if not 0 <= base + value <= canvas - digit:
                raise ValueError(f"shift {shift} moves the digit out of the canvas: the static "
                                 f"offset is {base}, so each shift must lie in "
                                 f"[{-base}, {canvas - digit - base}]")
        return shift

    def _placements(self, epoch: int) -> torch.Tensor:
        offsets = placement_offsets(len(self), self.canvas, self.digit, self.patch,
                                    self.placement, self.seed, epoch)
        return offsets + torch.tensor(self.shift, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the placements of ``epoch`` (no effect on ``"static"``).

        Args:
            epoch: Non-negative epoch number. Placements are a function of (seed, epoch, index).

        Note:
            DataLoader workers hold copies of the data set: call this before iterating a new
            epoch, and do not combine it with ``persistent_workers=True``.
        """
        epoch = check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self.epoch = epoch
            self._offsets = self._placements(epoch)

    def offsets(self) -> torch.Tensor:
        """Placements of the current epoch.

        Returns:
            ``(N, 2)`` int64 tensor of (row, column) offsets of each digit's top-left corner.
        """
        return self._offsets.clone()

    def get_batch(self, indices: Union[torch.Tensor, Sequence[int]]
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Build several items at once (vectorised; same values as indexing item by item).

        Args:
            indices: ``(B,)`` item indices.

        Returns:
            ``(x, y)``: ``x`` float32 ``(B, 1, canvas, canvas)``, ``y`` int64 ``(B,)``.
        """
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"index out of range for a data set of {n} items: "
                             f"min {int(idx.min())}, max {int(idx.max())}")
        idx = idx % n if n else idx
        b, d, c = idx.numel(), self.digit, self.canvas
        digits = (self.images[idx].float() / 255.0 - MNIST_MEAN) / MNIST_STD  # (B, d, d)
        off = self._offsets[idx]  # (B, 2)
        ar = torch.arange(d)
        rows, cols = (off[:, 0:1] + ar) % c, (off[:, 1:2] + ar) % c  # wrap: "roll" only
        flat = rows[:, :, None] * c + cols[:, None, :]  # (B, d, d)
        out = torch.full((b, c * c), self.background, dtype=torch.float32)
        out.scatter_(1, flat.reshape(b, d * d), digits.reshape(b, d * d))
        return out.view(b, 1, c, c), self.labels[idx]

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if isinstance(i, torch.Tensor):
            i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a data set of {n} items")
        i %= n
        y0, x0 = (int(v) for v in self._offsets[i])
        d = self.digit
        out = torch.full((1, self.canvas, self.canvas), self.background, dtype=torch.float32)
        out[0, :d, :d] = (self.images[i].float() / 255.0 - MNIST_MEAN) / MNIST_STD
        return out.roll((y0, x0), dims=(1, 2)), self.labels[i]

    def __repr__(self) -> str:
        return (f"DynamicMNIST(n={len(self)}, canvas={self.canvas}, patch={self.patch}, "
                f"placement={self.placement!r}, seed={self.seed}, shift={self.shift}, "
                f"epoch={self.epoch})")
