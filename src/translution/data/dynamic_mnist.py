"""Dynamic MNIST (SPEC section 7): ``d x d`` digits pasted on a blank ``canvas x canvas`` image
(MNIST-normalised, background ``-0.1307 / 0.3081``). Item ``i``'s offset is a SplitMix64 hash of
``(seed, epoch, i)``, independent of torch's RNG, the workers and the length: resumes are exact."""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils import check_int
from .mnist import MNIST_MEAN, MNIST_STD

#: The blank canvas value: a zero pixel, MNIST-normalised.
BACKGROUND = (0.0 - MNIST_MEAN) / MNIST_STD

#: ``"static"``: :func:`static_offset`; ``"patch"`` / ``"pixel"``: random multiples of ``patch`` /
#: pixels; ``"roll"``: the static image rolled circularly by random whole patches (it may wrap).
PLACEMENTS = ("static", "patch", "pixel", "roll")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash_stream(seed: int, epoch: int, indices: np.ndarray, stream: int) -> np.ndarray:
    """uint64 hash of (seed, epoch, index, stream), elementwise over ``indices``."""
    mask = (1 << 64) - 1
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([seed & mask], dtype=np.uint64))
        key = _splitmix64(key ^ np.uint64(epoch & mask))
        key = _splitmix64(key ^ np.uint64(stream))
        return _splitmix64(key ^ indices.astype(np.uint64))


def static_offset(canvas: int, digit: int, patch: int) -> int:
    """``k * patch`` nearest ``(canvas - digit) / 2`` with ``0 <= k * patch <= canvas - digit``
    (ties towards the smaller offset; 7 for ``canvas=42, patch=7``)."""
    free = canvas - digit
    ks = np.arange(free // patch + 1)
    return int(ks[np.argmin(np.abs(2 * ks * patch - free))]) * patch  # argmin: first tie


def placement_offsets(n: int, canvas: int, digit: int, patch: int, placement: str, seed: int,
                      epoch: int) -> torch.Tensor:
    """(row, column) offsets of the top-left corners of items ``0..n-1``, int64 ``(n, 2)`` in
    ``0..canvas - 1`` (``epoch`` is ignored for ``"static"``)."""
    free, off = canvas - digit, static_offset(canvas, digit, patch)
    if placement == "static":
        return torch.full((n, 2), off, dtype=torch.long)
    idx = np.arange(n, dtype=np.uint64)
    choices = np.uint64({"patch": free // patch + 1, "pixel": free + 1,
                         "roll": canvas // patch}[placement])
    out = np.stack([_hash_stream(seed, epoch, idx, s) % choices for s in (0, 1)], axis=1)
    out = out.astype(np.int64)
    if placement == "patch":
        out *= patch
    elif placement == "roll":
        out = (out * patch + off) % canvas
    return torch.from_numpy(out)


class DynamicMNIST(Dataset):
    """Digits ``images`` uint8 ``(N, d, d)`` with ``labels`` ``(N,)`` placed on a canvas by
    ``placement`` (:data:`PLACEMENTS`), a ``"static"`` digit moved by ``shift=(dr, dc)`` pixels;
    items ``(x float32 (1, canvas, canvas), y int64 ())``."""

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
        canvas, patch = check_int("canvas", canvas, 1), check_int("patch", patch, 1)
        self.seed = check_int("seed", seed, 0)
        if not isinstance(placement, str) or placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        digit = int(images.shape[1])
        if canvas < digit:
            raise ValueError(f"canvas must be >= the digit size {digit}, got canvas={canvas}")
        if placement != "pixel" and canvas % patch != 0:
            raise ValueError(f"placement {placement!r} needs canvas divisible by patch, got "
                             f"canvas={canvas}, patch={patch} (remainder {canvas % patch})")
        self.images, self.labels, self.digit = images, labels.long(), digit
        self.canvas, self.patch, self.placement = canvas, patch, placement
        self.shift, self.background, self.epoch = self._check_shift(shift), BACKGROUND, -1
        self.set_epoch(0)

    def _check_shift(self, shift) -> Tuple[int, int]:
        if not isinstance(shift, (tuple, list)) or len(shift) != 2:
            raise TypeError(f"shift must be a (dr, dc) pair of ints, got {shift!r}")
        shift = (check_int("shift[0]", shift[0]), check_int("shift[1]", shift[1]))
        if shift != (0, 0) and self.placement != "static":
            raise ValueError(f"shift applies to placement 'static' only, got {self.placement!r}")
        base, free = static_offset(self.canvas, self.digit, self.patch), self.canvas - self.digit
        if any(not 0 <= base + value <= free for value in shift):
            raise ValueError(f"shift {shift} moves the digit out of the canvas: the static offset "
                             f"is {base}, so each shift must lie in [{-base}, {free - base}]")
        return shift

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Use the placements of ``epoch`` (a function of seed, epoch, index). DataLoader workers
        hold copies: call this before each epoch, without ``persistent_workers=True``."""
        epoch = check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            offsets = placement_offsets(len(self), self.canvas, self.digit, self.patch,
                                        self.placement, self.seed, epoch)
            self.epoch, self._offsets = epoch, offsets + torch.tensor(self.shift, dtype=torch.long)

    def offsets(self) -> torch.Tensor:
        """(row, column) offsets of each digit's top-left corner this epoch, int64 ``(N, 2)``."""
        return self._offsets.clone()

    def get_batch(self, indices: Union[torch.Tensor, Sequence[int]]
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Items ``indices`` ``(B,)`` at once: ``x`` float32 ``(B, 1, canvas, canvas)``, ``y``
        int64 ``(B,)``."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)  # torch checks the range
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
        x, y = self.get_batch([int(i)])
        return x[0], y[0]

    def __repr__(self) -> str:
        return (f"DynamicMNIST(n={len(self)}, canvas={self.canvas}, patch={self.patch}, "
                f"placement={self.placement!r}, seed={self.seed}, shift={self.shift}, "
                f"epoch={self.epoch})")
