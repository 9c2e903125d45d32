"""scikit-learn's bundled ``digits`` (1,797 real 8x8 scans): the embedded default data set.

Shape handling: the 17 grey levels (0-16) become [0, 1] floats, and each 8x8 image is
upsampled 4x with nearest neighbours to 1x32x32, so the CIFAR architectures (BasicNet's 5x5
convolutions in particular) run unchanged. Nearest upsampling keeps the pixel values exact;
an attack may still change each of the 32x32 pixels on its own.
A fixed 20% of the examples (seeded permutation, seed 0) is the test set.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import IndexedImages

TEST_FRACTION = 0.2
_TEST_SEED = 0


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, 32, 32) float32 in [0, 1] and (N,) labels."""
    from sklearn.datasets import load_digits  # import cost (~1 s) only when used

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    x = F.interpolate(x, scale_factor=4, mode="nearest")
    return x.contiguous(), torch.tensor(d.target, dtype=torch.long)


def digits_train_test() -> tuple[IndexedImages, IndexedImages]:
    """The fixed train (80%) / test (20%) partition of digits."""
    x, y = load_digits_tensors()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_TEST_SEED))
    n_test = int(round(TEST_FRACTION * len(y)))
    test, train = perm[:n_test].sort().values, perm[n_test:].sort().values
    return IndexedImages(x[train], y[train]), IndexedImages(x[test], y[test])
