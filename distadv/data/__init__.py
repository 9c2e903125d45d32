"""Data sets (digits, Fashion-MNIST, CIFAR-10/100, synthetic) split into train / val / test, in [0, 1]."""
from __future__ import annotations

import torch

from ..registry import Registry
from .augment import random_crop_flip
from .base import DataInfo, IndexedImages, LoaderSpec, Splits, split_train_val
from .cifar import CIFAR_MEAN, CIFAR_STD, load_cifar
from .digits import digits_train_test
from .generated import open_extra
from .fashion_mnist import MEAN as FMNIST_MEAN, STD as FMNIST_STD, load_fashion_mnist

DATASETS: Registry = Registry("data set")

# Shapes for synthetic stand-ins and for models built before any file is read.
SHAPES = {"digits": (10, 1, 32), "fashion_mnist": (10, 1, 28), "cifar10": (10, 3, 32),
          "cifar100": (100, 3, 32)}
# Where each data set is read from when data.root is not set.
DEFAULT_ROOTS = {"cifar10": "data", "cifar100": "data", "fashion_mnist": "/usr/share/datasets/fashion-mnist"}


@DATASETS.register("digits")
def _digits(cfg):
    size = image_side(cfg)
    train, test = digits_train_test(size)
    mean = train.images.mean(dim=(0, 2, 3)).tolist()
    std = train.images.std(dim=(0, 2, 3)).tolist()
    return train, test, DataInfo(10, 1, size, mean, std)


def image_side(cfg) -> int:
    """The side of ``cfg.name``'s images: ``data.image_size`` (digits), else its native one."""
    return cfg.image_size or SHAPES[cfg.name][2]


def data_root(cfg) -> str:
    """``data.root``, else the data set's default location (``DEFAULT_ROOTS``)."""
    return cfg.root or DEFAULT_ROOTS.get(cfg.name, "data")


@DATASETS.register("fashion_mnist")
def _fashion_mnist(cfg):
    train, test = load_fashion_mnist(data_root(cfg), cfg.download)
    return train, test, DataInfo(10, 1, 28, FMNIST_MEAN, FMNIST_STD)


def _cifar(name):
    def build(cfg):
        train, test = load_cifar(name, data_root(cfg), cfg.download, cfg.verify_checksums)
        c, ch, s = SHAPES[name]
        return train, test, DataInfo(c, ch, s, CIFAR_MEAN[name], CIFAR_STD[name])
    return build


DATASETS.register("cifar10")(_cifar("cifar10"))
DATASETS.register("cifar100")(_cifar("cifar100"))


def synthetic(name: str, n: int, seed: int = 0, size: int | None = None) -> tuple[IndexedImages, IndexedImages, DataInfo]:
    """Random uint8 images and labels of data set ``name``'s shape (smoke tests); ``size``
    overrides its side (``image_side``)."""
    classes, ch, s = SHAPES[name]
    s = size or s
    g = torch.Generator().manual_seed(seed)
    make = lambda: IndexedImages(torch.randint(0, 256, (n, ch, s, s), generator=g, dtype=torch.uint8),
                                 torch.randint(0, classes, (n,), generator=g))
    return make(), make(), DataInfo(classes, ch, s, [0.5] * ch, [0.25] * ch)


def build_splits(cfg, with_extra: bool = False) -> Splits:
    """Load ``cfg.name`` (a DataConfig) and hold out the validation split; ``with_extra``
    also opens and verifies the generated sets of ``data.extra`` (training needs them,
    evaluation does not)."""
    if cfg.synthetic:
        full, test, info = synthetic(cfg.name, 2 * cfg.synthetic_size, size=image_side(cfg))
        val_size = min(cfg.val_size, cfg.synthetic_size)
    else:
        full, test, info = DATASETS.build(cfg.name, cfg=cfg)
        val_size = cfg.val_size
    train, val = split_train_val(full, val_size, cfg.split_seed)
    if cfg.test_size is not None and cfg.test_size < len(test):
        test = test.subset(torch.arange(cfg.test_size))
    extra = open_extra(cfg, info) if with_extra else []
    return Splits(train, val, test, info, extra)


__all__ = ["DATASETS", "SHAPES", "DEFAULT_ROOTS", "build_splits", "data_root", "image_side", "Splits", "DataInfo", "IndexedImages", "LoaderSpec",
           "random_crop_flip", "split_train_val", "synthetic"]
