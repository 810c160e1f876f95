"""Data sets and input pipelines: readers here, fetching in :mod:`translution.data.fetch`.

Vision (MNIST, Fashion-MNIST, Dynamic MNIST, ImageFolder) needs the ``vision`` extra when read;
text (:mod:`.text`, :mod:`.tokenizers`, :mod:`.austen`, :mod:`.openwebtext`) the ``text`` extra.
"""
from .fetch import DataUnavailableError, default_cache_dir
from .idx import check_idx, write_idx
from .mnist import MNIST_MEAN, MNIST_STD, load_fashion_mnist, load_mnist
from .dynamic_mnist import DynamicMNIST
from .imagefolder import IMAGENET_MEAN, IMAGENET_STD, MixUpCutMix, build_transforms, image_folder
