"""Fashion-MNIST (Xiao et al. 2017) through torchvision's own ``FashionMNIST`` class.

Where the four original idx ``.gz`` files are looked for, in this order:
  ``root/``                        the Debian layout (package ``dataset-fashion-mnist`` installs
                                   them in /usr/share/datasets/fashion-mnist/, the default root)
  ``root/FashionMNIST/raw/``       torchvision's own layout (what ``data.download=true`` writes)

torchvision reads only the *extracted* files in ``root/FashionMNIST/raw/`` (its existence check
strips ``.gz``; only ``download=True`` extracts). Rather than write next to a package's files,
the archives are extracted with torchvision's ``extract_archive`` into a private temporary
folder, read by ``FashionMNIST`` there, and the folder is removed: ~0.5 s per process, nothing
cached that could go stale. 60,000 train and 10,000 test images, 1x28x28 uint8, 10 classes.
"""
from __future__ import annotations

import gzip
import tempfile
import zlib
from pathlib import Path
from typing import Optional

from torchvision import datasets
from torchvision.datasets.utils import extract_archive

from ..errors import DataError
from .base import IndexedImages

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
APT_PACKAGE = "dataset-fashion-mnist"
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# Over the 60,000 training images (Xiao et al.'s statistics; the model's first layer uses them).
MEAN, STD = (0.2860,), (0.3530,)
SIZES = {"train": 60_000, "test": 10_000}
# What a damaged archive raises in gzip / torchvision's idx reader (each seen with a truncated
# or bit-flipped file): never shown as a traceback.
_CORRUPT = (OSError, EOFError, zlib.error, gzip.BadGzipFile, RuntimeError, ValueError,
            AssertionError, IndexError)


def _source(root: Path) -> Optional[Path]:
    """The folder that holds the four archives, or None."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        if all((folder / f).is_file() for f in FILES):
            return folder
    return None


def _missing(root: Path) -> DataError:
    return DataError(
        f"fashion_mnist not found in {root}: expected {', '.join(FILES)} there (or in "
        f"{root}/FashionMNIST/raw/); install them with `apt-get install {APT_PACKAGE}` (into "
        f"{DEBIAN_DIR}, the default), point data.root=DIR at a folder that holds them, or add "
        "data.download=true to let torchvision fetch them")


def _to_set(ds) -> IndexedImages:
    return IndexedImages(ds.data.unsqueeze(1).contiguous(), ds.targets.clone())   # uint8 N,1,28,28


def load_fashion_mnist(root: Optional[str], download: bool) -> tuple[IndexedImages, IndexedImages]:
    """Train and test sets from ``root`` (default: Debian's folder); see the module docstring.

    Missing files raise a DataError naming the folder, the four files, the apt package and
    ``data.download=true``; a truncated or corrupt archive raises a one-line DataError.
    """
    base = Path(root or DEBIAN_DIR)
    if download:
        try:
            sets = [datasets.FashionMNIST(str(base), train=t, download=True) for t in (True, False)]
        except (OSError, RuntimeError) as e:   # no network, or root not writable
            raise DataError(f"fashion_mnist: download into {base}/FashionMNIST/raw failed "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                            f"choose a writable data.root=DIR, or install {APT_PACKAGE}") from None
        return _to_set(sets[0]), _to_set(sets[1])
    src = _source(base)
    if src is None:
        raise _missing(base)
    with tempfile.TemporaryDirectory(prefix="distadv-fmnist-") as tmp:
        raw = Path(tmp) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        current = FILES[0]
        try:
            for current in FILES:
                extract_archive(str(src / current), str(raw))
            current = "the extracted idx files"
            train = datasets.FashionMNIST(tmp, train=True, download=False)
            test = datasets.FashionMNIST(tmp, train=False, download=False)
        except _CORRUPT as e:
            detail = str(e).splitlines()[0][:100] if str(e) else ""
            raise DataError(f"fashion_mnist: {src / current if current in FILES else current} "
                            f"is corrupt or truncated ({type(e).__name__}: {detail}); reinstall "
                            f"them (apt-get install --reinstall {APT_PACKAGE}) or restore the "
                            "files") from None
    out = _to_set(train), _to_set(test)
    for name, ds in zip(SIZES, out):
        if len(ds) != SIZES[name] or tuple(ds.images.shape[1:]) != (1, 28, 28):
            raise DataError(f"fashion_mnist in {src}: the {name} split has {len(ds)} images of "
                            f"{tuple(ds.images.shape[1:])}, expected {SIZES[name]} of (1, 28, 28)")
    return out


__all__ = ["load_fashion_mnist", "DEBIAN_DIR", "FILES", "MEAN", "STD"]
