"""Fashion-MNIST through the installed Debian package (`dataset-fashion-mnist`, which `make
test` installs): split sizes, the first image against the idx file's own bytes, the held-out
validation split, the three loaders pixel-identical, and clear errors for missing or damaged
archives. Real data, nothing mocked."""
from __future__ import annotations

import gzip
import hashlib
import shutil
from dataclasses import replace
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, run_env

from distadv.compose import load_config
from distadv.data import LoaderSpec, Splits, build_splits
from distadv.data.base import IndexedImages
from distadv.data.device import DeviceLoader
from distadv.data.fashion_mnist import DEBIAN_DIR, FILES, load_fashion_mnist
from distadv.engine.loaders import TorchLoader
from distadv.errors import DataError

from pathlib import Path


@pytest.fixture(scope="module")
def fmnist():
    """The installed package's data (no skip: `make test` installs it, and a missing package
    fails here with the apt command)."""
    return load_fashion_mnist(None, download=False)


def test_split_sizes_shapes_and_labels(fmnist):
    train, test = fmnist
    assert len(train) == 60_000 and len(test) == 10_000
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))


def test_first_train_image_equals_the_idx_bytes(fmnist):
    with gzip.open(Path(DEBIAN_DIR) / "train-images-idx3-ubyte.gz") as f:
        header, pixels = f.read(16), f.read(784)
    with gzip.open(Path(DEBIAN_DIR) / "train-labels-idx1-ubyte.gz") as f:
        label = f.read(9)[8]
    assert int.from_bytes(header[4:8], "big") == 60_000            # idx header: count, 28, 28
    train, _ = fmnist
    assert train.images[0, 0].flatten().numpy().tobytes() == pixels
    assert int(train.labels[0]) == label
    x, _, _ = train[0]
    assert torch.equal(x, torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(1, 28, 28).float() / 255)


def test_validation_split_is_held_out_of_train(fmnist):
    cfg = load_config(["recipe=fmnist_linf"])
    s = build_splits(cfg.data)
    assert (len(s.train), len(s.val), len(s.test)) == (58_000, 2_000, 10_000)
    digest = lambda ds: sorted(hashlib.sha1(img.numpy().tobytes() + bytes([int(y)])).hexdigest()
                               for img, y in zip(ds.images, ds.labels))
    # train and val are a partition of the 60,000 training images (multisets of image+label)
    assert sorted(digest(s.train) + digest(s.val)) == digest(fmnist[0])
    assert torch.equal(s.test.images, fmnist[1].images)             # test untouched


def test_three_loaders_yield_pixel_identical_images(fmnist, tmp_path):
    """device, torch and ffcv (a .beton written by distadv's writer, grey stored as RGB) on
    real Fashion-MNIST images: identical pixels and labels for every index."""
    pytest.importorskip("ffcv", reason="make ffcv-deps && pip install -e '.[ffcv]'")
    from distadv.data.ffcv import FFCVLoader, write_betons
    train, test = fmnist
    part = lambda ds, n: IndexedImages(ds.images[:n], ds.labels[:n])
    splits = Splits(part(train, 300), part(train, 50), part(test, 120), None)
    cfg = load_config(["recipe=fmnist_linf", f"data.root={tmp_path}"]).data
    paths = write_betons(splits, cfg)
    for split, train_mode in (("train", True), ("test", False)):
        ds = getattr(splits, split)
        spec = LoaderSpec(16, train=train_mode, seed=3)
        loaders = {
            "device": DeviceLoader(ds, spec),
            "torch": TorchLoader(ds, spec),
            "ffcv": FFCVLoader(paths[split], replace(spec, num_workers=1), channels=1)}
        seen = {n: {int(i): (x, int(y)) for xb, yb, ib in ld for x, y, i in zip(xb, yb, ib)}
                for n, ld in loaders.items()}
        common = set.intersection(*(set(v) for v in seen.values()))
        if train_mode:   # each loader drops its own last partial batch (its own order)
            assert len(common) >= len(ds) - 3 * 16
        else:            # evaluation drops nothing
            assert all(set(v) == set(range(len(ds))) for v in seen.values())
        for i in common:
            ref = ds.images[i].float() / 255
            for name in seen:
                x, y = seen[name][i]
                assert x.shape == (1, 28, 28) and torch.equal(x, ref) and y == int(ds.labels[i]), (name, i)


def test_another_root_with_the_same_files_works_and_torchvision_layout_too(fmnist, tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FILES:
        shutil.copy(Path(DEBIAN_DIR) / f, raw / f)      # torchvision's own layout, still .gz
    train, test = load_fashion_mnist(str(tmp_path), download=False)
    assert torch.equal(train.images[:100], fmnist[0].images[:100]) and len(test) == 10_000


def _cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "distadv/train.py"), *args],
                          env=run_env(), capture_output=True, text=True, timeout=120)


def test_missing_files_are_one_line_naming_folder_files_package_and_flag(tmp_path):
    r = _cli("recipe=fmnist_natural", f"data.root={tmp_path}", f"runs_root={tmp_path / 'runs'}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    line = r.stderr
    assert str(tmp_path) in line and all(f in line for f in FILES)
    assert "apt-get install dataset-fashion-mnist" in line and "data.download=true" in line
    assert not (tmp_path / "runs").exists()                 # nothing written


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_archive_is_one_clear_line(tmp_path, damage):
    for f in FILES:
        shutil.copy(Path(DEBIAN_DIR) / f, tmp_path / f)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x1f\x8b" + b"x" * 999)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is corrupt or truncated"):
        load_fashion_mnist(str(tmp_path), download=False)
    r = _cli("recipe=fmnist_natural", f"data.root={tmp_path}", f"runs_root={tmp_path / 'runs'}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "corrupt or truncated" in r.stderr and "Traceback" not in r.stderr


SHORT = ["optim.epochs=2", "runtime.max_steps_per_epoch=40", "data.val_size=500",
         "data.test_size=500", "autoattack.max_examples=200", "log.progress=never",
         "log.tensorboard=false"]
# Measured with these settings over seeds 0, 1, 2 (2026-12-01, AVX2 CPU): PGD-20 accuracy at
# eps 0.1 of PGD-AT minus natural training on the 500 test images: 0.356, 0.240, 0.368
# (AutoAttack APGD-CE + APGD-T on 200: 0.385, 0.225, 0.335). The test asserts a margin that
# held on every seed, with room below the smallest.
MARGIN = 0.15


@pytest.mark.slow
def test_short_pgd_at_beats_natural_training_under_pgd(tmp_path):
    from distadv.engine.fit import fit
    res = {}
    for recipe in ("fmnist_natural", "fmnist_linf"):
        cfg = load_config([f"recipe={recipe}", f"run_dir={tmp_path / recipe}", *SHORT])
        res[recipe] = fit(cfg)
    nat, at = res["fmnist_natural"]["test"], res["fmnist_linf"]["test"]
    assert res["fmnist_linf"]["test_examples"] == 500 and nat["natural"] > 0.6
    assert at["pgd_linf"] - nat["pgd_linf"] >= MARGIN, (at, nat)
    assert at["aa_linf"] - nat["aa_linf"] >= MARGIN, (at, nat)          # AutoAttack agrees
