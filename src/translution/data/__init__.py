"""Data sets and input pipelines (vision: MNIST, Fashion-MNIST, Dynamic MNIST, ImageFolder)."""
from .idx import read_idx, write_idx
from .mnist import (
    DataUnavailableError,
    MNIST_MEAN,
    MNIST_STD,
    default_cache_dir,
    load_fashion_mnist,
    load_mnist,
)
from .dynamic_mnist import DynamicMNIST
from .imagefolder import IMAGENET_MEAN, IMAGENET_STD, MixUpCutMix, build_transforms, image_folder
