"""ImageFolder pipeline with the reference ImageNet-1K recipe (SPEC section 6), via torchvision.

* Training: ``RandomResizedCrop(img_size)`` -> ``RandomHorizontalFlip()`` -> ``RandAugment(2, 9)``
  -> ``ToTensor()`` -> ``Normalize(ImageNet mean, std)``; then, per batch, MixUp (alpha 0.8) or
  CutMix (alpha 1.0), one of the two chosen at random for each batch (:class:`MixUpCutMix`).
* Evaluation: ``Resize(resize)`` (shorter side) -> ``CenterCrop(img_size)`` -> ``ToTensor()`` ->
  ``Normalize``. The reference uses 256 -> 224.

torchvision is an optional dependency (``pip install translution[vision]``); it is imported when a
function of this module is called, so importing :mod:`translution.data` does not need it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from ..utils import check_int

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_transforms",
    "image_folder",
    "MixUpCutMix",
]

PathLike = Union[str, os.PathLike]

#: Per-channel mean and standard deviation of ImageNet (RGB, pixels in [0, 1]).
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)


def _torchvision():
    try:
        import torchvision  # noqa: F401
        from torchvision import datasets, transforms
        from torchvision.transforms import v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("translution.data.imagefolder needs torchvision: "
                          "pip install 'translution[vision]'") from exc
    return datasets, transforms, v2


def build_transforms(train: bool, img_size: int = 224, resize: int = 256,
                     randaugment: Optional[Tuple[int, int]] = (2, 9),
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                     ) -> Callable:
    """Per-image transforms of the reference ImageNet recipe.

    Args:
        train: Training (random) or evaluation (deterministic) pipeline.
        img_size: Output side in pixels.
        resize: Evaluation only: the shorter side is resized to this before the centre crop;
            must be ``>= img_size``.
        randaugment: Training only: ``(num_ops, magnitude)`` of RandAugment, or ``None`` to skip.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation standard deviation.

    Returns:
        A callable mapping a PIL image to a float32 ``(3, img_size, img_size)`` tensor.

    Raises:
        TypeError, ValueError: For invalid sizes or RandAugment settings.
    """
    _, T, _ = _torchvision()
    img_size = check_int("img_size", img_size, 1)
    resize = check_int("resize", resize, 1)
    if resize < img_size:
        raise ValueError(f"resize must be >= img_size, got resize={resize}, img_size={img_size}")
    norm = [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    if not train:
        return T.Compose([T.Resize(resize), T.CenterCrop(img_size), *norm])
    steps: List[Callable] = [T.RandomResizedCrop(img_size), T.RandomHorizontalFlip()]
    if randaugment is not None:
        if len(randaugment) != 2:
            raise ValueError(f"randaugment must be (num_ops, magnitude), got {randaugment!r}")
        num_ops, magnitude = randaugment
        num_ops = check_int("randaugment num_ops", num_ops, 1)
        magnitude = check_int("randaugment magnitude", magnitude, 0)
        steps.append(T.RandAugment(num_ops=num_ops, magnitude=magnitude))
    return T.Compose([*steps, *norm])


def image_folder(root: PathLike, train: bool, img_size: int = 224, resize: int = 256,
                 randaugment: Optional[Tuple[int, int]] = (2, 9)):
    """A torchvision ``ImageFolder`` (``root/<class>/<image>``) with :func:`build_transforms`.

    Args:
        root: Folder with one sub-folder per class (e.g. ``imagenet/train``).
        train: Use the training (augmenting) or the evaluation transforms.
        img_size: Output side in pixels.
        resize: Evaluation resize of the shorter side (``>= img_size``).
        randaugment: Training RandAugment ``(num_ops, magnitude)`` or ``None``.

    Returns:
        ``torchvision.datasets.ImageFolder`` yielding ``(float32 (3, img_size, img_size), int)``.

    Raises:
        FileNotFoundError: If ``root`` is not a folder (or holds no class folder with images).
    """
    datasets, _, _ = _torchvision()
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root {root} does not exist or is not a folder")
    transform = build_transforms(train, img_size=img_size, resize=resize, randaugment=randaugment)
    return datasets.ImageFolder(str(root), transform=transform)


class MixUpCutMix:
    """Batch-level MixUp or CutMix (one of the two, chosen at random per batch).

    Uses ``torchvision.transforms.v2.MixUp`` / ``CutMix`` inside ``RandomChoice``. An alpha of 0
    disables that method; with both 0 the targets are just one-hot.

    Args:
        num_classes: Number of classes.
        mixup_alpha: Beta(alpha, alpha) parameter of MixUp (reference 0.8).
        cutmix_alpha: Beta(alpha, alpha) parameter of CutMix (reference 1.0).

    Calling it with ``(images (B, C, H, W) float, labels (B,) int64)`` returns
    ``(images (B, C, H, W), targets (B, num_classes) float)``, each target row summing to 1.
    :meth:`collate` is a drop-in ``collate_fn`` for a ``DataLoader``.

    Raises:
        TypeError, ValueError: For invalid arguments or inputs.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0):
        _, _, v2 = _torchvision()
        self.num_classes = check_int("num_classes", num_classes, 1)
        for name, a in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if isinstance(a, bool) or not isinstance(a, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(a).__name__}")
            if not a >= 0:
                raise ValueError(f"{name} must be >= 0, got {a}")
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        choices = []
        if self.mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=self.mixup_alpha, num_classes=self.num_classes))
        if self.cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=self.cutmix_alpha, num_classes=self.num_classes))
        self._transform = v2.RandomChoice(choices) if choices else None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape}")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels)
            raise ValueError(f"labels must be a (B,) tensor, got {shape}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {labels.shape[0]} labels")
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}, got range "
                             f"{int(labels.min())}..{int(labels.max())}")
        if self._transform is None:
            return images, torch.nn.functional.one_hot(labels, self.num_classes).to(images.dtype)
        return self._transform(images, labels)

    def collate(self, batch: Sequence[Tuple[torch.Tensor, int]]
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``collate_fn`` for a DataLoader: default collation followed by MixUp/CutMix."""
        from torch.utils.data import default_collate

        images, labels = default_collate(batch)
        return self(images, torch.as_tensor(labels))

    def __repr__(self) -> str:
        return (f"MixUpCutMix(num_classes={self.num_classes}, mixup_alpha={self.mixup_alpha}, "
                f"cutmix_alpha={self.cutmix_alpha})")
