"""Data sets and input pipelines: readers here, fetching in :mod:`translution.data.fetch`.
ImageFolder needs the ``vision`` extra; the text modules the ``text`` extra."""
from .fetch import DataUnavailableError, default_cache_dir
from .mnist import MNIST_MEAN, MNIST_STD, check_idx, load_fashion_mnist, load_mnist
from .dynamic_mnist import DynamicMNIST
from .imagefolder import IMAGENET_MEAN, IMAGENET_STD, MixUpCutMix, build_transforms, image_folder
