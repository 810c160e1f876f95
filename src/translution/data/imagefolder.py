"""ImageFolder data with the reference ImageNet-1K recipe (SPEC §6), through torchvision: random
resized crop, flip, RandAugment(2, 9), then per batch MixUp (α 0.8) or CutMix (α 1.0) for
training; resize 256 and centre crop 224 for evaluation."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import torch

from ..utils import PathLike, check_int, require

#: Per-channel mean and standard deviation of ImageNet (RGB, pixels in [0, 1]).
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)


def build_transforms(train: bool, img_size: int = 224, resize: int = 256,
                     randaugment: Optional[Tuple[int, int]] = (2, 9)) -> Callable:
    """PIL image -> float32 ``(3, img_size, img_size)``: the random training pipeline
    (``randaugment``: ``(num_ops, magnitude)`` or ``None``) or the evaluation one (``resize``
    the shorter side, then centre crop)."""
    T = require("torchvision.transforms", "vision")
    img_size, resize = check_int("img_size", img_size, 1), check_int("resize", resize, 1)
    if resize < img_size:
        raise ValueError(f"resize must be >= img_size, got resize={resize}, img_size={img_size}")
    norm = [T.ToTensor(), T.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))]
    if not train:
        return T.Compose([T.Resize(resize), T.CenterCrop(img_size), *norm])
    steps: list = [T.RandomResizedCrop(img_size), T.RandomHorizontalFlip()]
    if randaugment is not None:
        if len(randaugment) != 2:
            raise ValueError(f"randaugment must be (num_ops, magnitude), got {randaugment!r}")
        steps.append(T.RandAugment(num_ops=check_int("randaugment num_ops", randaugment[0], 1),
                                   magnitude=check_int("randaugment magnitude", randaugment[1], 0)))
    return T.Compose([*steps, *norm])


def image_folder(root: PathLike, train: bool, img_size: int = 224, resize: int = 256,
                 randaugment: Optional[Tuple[int, int]] = (2, 9)):
    """``torchvision.datasets.ImageFolder(root)`` (``root/<class>/<image>``) with
    :func:`build_transforms`; items ``(float32 (3, img_size, img_size), int)``."""
    datasets, root = require("torchvision.datasets", "vision"), Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root {root} does not exist or is not a folder")
    return datasets.ImageFolder(str(root), transform=build_transforms(
        train, img_size=img_size, resize=resize, randaugment=randaugment))


class MixUpCutMix:
    """MixUp or CutMix (torchvision's ``v2``), one chosen at random per batch: ``(images (B, C,
    H, W), labels (B,))`` -> ``(images, targets (B, num_classes))``; an alpha of 0 disables that
    method (both 0: one-hot targets). :meth:`collate` is a ``DataLoader`` ``collate_fn``."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0):
        v2 = require("torchvision.transforms.v2", "vision")
        self.num_classes = check_int("num_classes", num_classes, 1)
        for name, a in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if isinstance(a, bool) or not isinstance(a, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(a).__name__}")
            if not a >= 0:
                raise ValueError(f"{name} must be >= 0, got {a}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        choices = [m(alpha=a, num_classes=self.num_classes)
                   for m, a in ((v2.MixUp, self.mixup_alpha), (v2.CutMix, self.cutmix_alpha))
                   if a > 0]
        self._transform = v2.RandomChoice(choices) if choices else None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        labels = labels.long()
        if images.dim() != 4 or labels.dim() != 1 or len(labels) != len(images):
            raise ValueError(f"expected images (B, C, H, W) and labels (B,), got "
                             f"{len(images)} images but {len(labels)} labels "
                             f"(shapes {tuple(images.shape)}, {tuple(labels.shape)})")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}, got range "
                             f"{int(labels.min())}..{int(labels.max())}")
        if self._transform is None:
            return images, torch.nn.functional.one_hot(labels, self.num_classes).to(images.dtype)
        return self._transform(images, labels)

    def collate(self, batch: Sequence[Tuple[torch.Tensor, int]]
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Default collation, then MixUp/CutMix."""
        images, labels = torch.utils.data.default_collate(batch)
        return self(images, torch.as_tensor(labels))

    def __repr__(self) -> str:
        return (f"MixUpCutMix(num_classes={self.num_classes}, mixup_alpha={self.mixup_alpha}, "
                f"cutmix_alpha={self.cutmix_alpha})")
