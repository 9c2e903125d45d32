"""CIFAR-10/100 through torchvision's own dataset classes, held in memory as uint8."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torchvision import datasets

from ..errors import DataError
from .base import IndexedImages

CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2471, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
_LAYOUT = {
    "cifar10": (datasets.CIFAR10, "cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
    "cifar100": (datasets.CIFAR100, "cifar-100-python", ["train", "test", "meta"]),
}


def _without_checksums(cls):
    """``cls`` with its md5 sums removed: torchvision then only checks that the files exist.
    For the tests' tiny archives in the real format (``data.verify_checksums=false``)."""
    return type(f"Unverified{cls.__name__}", (cls,), {
        "train_list": [[f, None] for f, _ in cls.train_list],
        "test_list": [[f, None] for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None}})


def load_cifar(name: str, root: str, download: bool,
               verify: bool = True) -> tuple[IndexedImages, IndexedImages]:
    """Train and test sets of ``name`` ('cifar10' or 'cifar100') from ``root``.

    Missing files without ``download`` and corrupt archives raise a DataError that names the
    path, the expected files and the download flag (never a traceback from inside pickle).
    ``verify=False`` skips torchvision's md5 check (a corrupt pickle is still reported).
    """
    cls, folder, files = _LAYOUT[name]
    if not verify:
        cls = _without_checksums(cls)
    base = Path(root) / folder
    missing = [f for f in files if not (base / f).is_file()]
    if missing and not download:
        raise DataError(
            f"{name} not found: expected {base}/ with {', '.join(files)} (missing: "
            f"{', '.join(missing)}); set data.root=DIR to the folder that holds '{folder}', "
            f"or data.download=true to fetch it")
    try:
        train = cls(root=str(root), train=True, download=download)
        test = cls(root=str(root), train=False, download=False)
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, ValueError, OSError) as e:
        raise DataError(f"{name} at {base} is corrupt or incomplete ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); delete the folder and "
                        f"rerun with data.download=true, or restore the files") from None

    def to_set(ds) -> IndexedImages:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # uint8 N,3,32,32
        return IndexedImages(x, torch.tensor(ds.targets))

    return to_set(train), to_set(test)
