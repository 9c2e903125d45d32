"""scikit-learn's bundled ``digits`` (1,797 real 8x8 scans): the embedded default data set.

Shape handling: the 17 grey levels (0-16) become [0, 1] floats, and each 8x8 image is
upsampled with nearest neighbours to 1x32x32 by default (``data.image_size``), so the CIFAR
architectures (BasicNet's 5x5 convolutions in particular) run unchanged. Nearest upsampling
keeps the pixel values exact; an attack may still change each of the 32x32 pixels on its own.
``data.image_size=8`` keeps the native scans: 16x fewer pixels, so convolutions and attacks
cost ~16x less, and the attacker changes the 64 real pixels only.
A fixed 20% of the examples (seeded permutation, seed 0) is the test set.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import IndexedImages

TEST_FRACTION = 0.2
_TEST_SEED = 0


NATIVE_SIZE = 8
SIZES = (8, 16, 24, 32)     # whole multiples of the native 8x8 (nearest upsampling)


def load_digits_tensors(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, size, size) float32 in [0, 1] and (N,) labels."""
    from sklearn.datasets import load_digits  # import cost (~1 s) only when used

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    if size != NATIVE_SIZE:
        x = F.interpolate(x, scale_factor=size // NATIVE_SIZE, mode="nearest")
    return x.contiguous(), torch.tensor(d.target, dtype=torch.long)


def digits_train_test(size: int = 32) -> tuple[IndexedImages, IndexedImages]:
    """The fixed train (80%) / test (20%) partition of digits, at size x size pixels."""
    x, y = load_digits_tensors(size)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_TEST_SEED))
    n_test = int(round(TEST_FRACTION * len(y)))
    test, train = perm[:n_test].sort().values, perm[n_test:].sort().values
    return IndexedImages(x[train], y[train]), IndexedImages(x[test], y[test])
