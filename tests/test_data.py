"""Data: the embedded digits set, the seeded validation split, batched augmentation, CIFAR errors."""
from __future__ import annotations

import pytest
import torch

from distadv.data import IndexedImages, random_crop_flip, split_train_val
from distadv.data.cifar import load_cifar
from distadv.errors import DataError


def test_digits_shape_range_and_fixed_test_split(digits):
    train, test = digits
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert train.images.shape[1:] == (1, 32, 32)
    levels = torch.unique(train.images * 16)
    assert levels.min() >= 0 and levels.max() <= 16 and torch.equal(levels, levels.round())
    x, y, i = test[5]
    assert x.shape == (1, 32, 32) and 0 <= int(y) < 10 and i == 5


def test_digits_native_size_is_the_scans_and_32_is_their_nearest_upsampling(digits):
    from sklearn.datasets import load_digits
    from distadv.compose import load_config
    from distadv.data import build_splits
    from distadv.data.digits import digits_train_test
    train8, test8 = digits_train_test(8)
    assert train8.images.shape[1:] == (1, 8, 8) and torch.equal(test8.labels, digits[1].labels)
    scans = torch.tensor(load_digits().images, dtype=torch.float32) / 16
    assert any(torch.equal(test8.images[0, 0], s) for s in scans)     # the real pixels, exact
    up = test8.images.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    assert torch.equal(up, digits[1].images)                          # 32 = each pixel 4x4
    splits = build_splits(load_config(["recipe=demo"]).data)           # the demo's data: 8x8
    assert splits.info.image_size == 8 and splits.train.images.shape[1:] == (1, 8, 8)


def test_validation_split_is_seeded_disjoint_and_complete():
    full = IndexedImages(torch.arange(100.0).view(100, 1, 1, 1), torch.arange(100) % 10)
    tr1, va1 = split_train_val(full, 20, seed=3)
    tr2, va2 = split_train_val(full, 20, seed=3)
    _, va3 = split_train_val(full, 20, seed=4)
    ids = lambda s: set(s.images.flatten().long().tolist())
    assert ids(va1) == ids(va2) and ids(va1) != ids(va3)
    assert len(ids(va1)) == 20 and not ids(va1) & ids(tr1) and len(ids(tr1) | ids(va1)) == 100
    with pytest.raises(ValueError, match="val_size"):
        split_train_val(full, 100, seed=0)


def test_uint8_images_become_unit_floats():
    ds = IndexedImages(torch.full((2, 3, 4, 4), 255, dtype=torch.uint8), torch.tensor([1, 2]))
    x, _, _ = ds[0]
    assert x.dtype == torch.float32 and x.max() == 1.0


def test_random_crop_flip_is_an_exact_padded_crop():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    out = random_crop_flip(x, pad=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(16):
        found = any(torch.equal(out[b], cand)
                    for dy in range(5) for dx in range(5)
                    for cand in (padded[b, :, dy:dy + 8, dx:dx + 8],
                                 padded[b, :, dy:dy + 8, dx:dx + 8].flip(-1)))
        assert found, b


def test_cifar_missing_files_name_path_files_and_flag(tmp_path):
    with pytest.raises(DataError, match=r"cifar10 not found: expected .*cifar-10-batches-py.*data_batch_1.*data.download=true"):
        load_cifar("cifar10", str(tmp_path), download=False)


def test_cifar_corrupt_archive_is_a_clear_error(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (base / name).write_bytes(b"\x80\x04truncated")
    with pytest.raises(DataError, match="corrupt or incomplete"):
        load_cifar("cifar10", str(tmp_path), download=False)
