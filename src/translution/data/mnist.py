"""MNIST and Fashion-MNIST through torchvision's IDX readers, and batch crop/flip augmentation.

A split is read from ``root`` (the four standard files, plain or ``.gz``, in ``root`` or its
``MNIST/raw``; checked for format, not digests, so subsets work), else from the cache
``<cache>/MNIST/raw`` (``FashionMNIST/raw``), digest-checked and filled by :mod:`.fetch`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..utils import PathLike, check_bool, check_int
from .fetch import IDX_DATASETS, MNIST_FILES, DataUnavailableError, cached_idx, gunzip
from .idx import check_idx


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


def _read_pair(folder: Path, names: Tuple[str, str], expected_n: Optional[int]
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 from ``folder`` (plain or ``.gz``:
    torchvision reads plain files, so a ``.gz`` is decompressed into a temporary folder)."""
    try:
        from torchvision.datasets.mnist import read_image_file, read_label_file
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading MNIST needs torchvision: pip install 'translution[vision]'"
                          ) from exc
    with tempfile.TemporaryDirectory(prefix="translution-idx-") as tmp:
        paths = []
        for name in names:
            path = folder / name
            if not path.is_file():
                path = Path(tmp) / name
                gz = folder / f"{name}.gz"
                path.write_bytes(gunzip(gz.read_bytes(), str(gz)))
            paths.append(path)
        check_idx(paths[0], 3)
        check_idx(paths[1], 1)
        images, labels = read_image_file(str(paths[0])), read_label_file(str(paths[1]))
    where = [str(folder / name) for name in names]
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


def _local_folder(root: Path, dataset: str, names: Tuple[str, str]) -> Optional[Path]:
    """``root`` or ``root/<MNIST|FashionMNIST>/raw``, whichever holds both files (plain or gz)."""
    for folder in (root, root / IDX_DATASETS[dataset][0] / "raw"):
        if all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in names):
            return folder
    return None


def _load(dataset: str, split: str, root: Optional[PathLike], cache_dir: Optional[PathLike],
          download: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(split, str):
        raise TypeError(f"split must be a str ('train' or 'test'), got {type(split).__name__}")
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = MNIST_FILES[split]
    if root is not None:
        folder = _local_folder(Path(root).expanduser(), dataset, names)
        if folder is not None:
            return _read_pair(folder, names, MNIST_SIZES[split] if dataset != "mnist" else None)
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
