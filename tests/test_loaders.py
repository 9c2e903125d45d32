"""Loaders: the torch and device loaders yield the same samples, shards match
DistributedSampler, augmentation is an exact padded crop; CIFAR from a tiny archive written
here in torchvision's real format (pickled batches + meta)."""
from __future__ import annotations

import pickle
from dataclasses import replace
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from distadv.compose import load_config
from distadv.data import IndexedImages, LoaderSpec
from distadv.data.cifar import load_cifar
from distadv.data.device import DeviceLoader, sampler_indices
from distadv.engine.fit import fit
from distadv.engine.loaders import TorchLoader
from distadv.errors import DataError
from tools.procs import launch_cmd

PER_BATCH = 13  # examples per tiny batch file: 5 x 13 = 65 training images, 13 test images


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """A CIFAR-10 archive in the real layout (cifar-10-batches-py, latin1 pickles), tiny."""
    root = tmp_path_factory.mktemp("cifar")
    base = root / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"batch_label": name, "data": rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, PER_BATCH).tolist(),
                 "filenames": [f"{name}_{i}.png" for i in range(PER_BATCH)]}
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f)
    return root


def test_tiny_archive_loads_through_torchvision(cifar_root):
    train, test = load_cifar("cifar10", str(cifar_root), download=False, verify=False)
    assert train.images.shape == (5 * PER_BATCH, 3, 32, 32) and train.images.dtype == torch.uint8
    assert len(test) == PER_BATCH
    with open(cifar_root / "cifar-10-batches-py/data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    first = torch.from_numpy(raw["data"][0].reshape(3, 32, 32))
    assert torch.equal(train.images[0], first) and int(train.labels[0]) == raw["labels"][0]
    with pytest.raises(DataError, match="corrupt or incomplete"):  # md5s checked by default
        load_cifar("cifar10", str(cifar_root), download=False, verify=True)


@pytest.mark.parametrize("n,world,shuffle,drop_last", [
    (65, 2, True, True), (65, 2, False, False), (13, 3, False, False), (64, 2, True, True),
    (7, 4, True, False)])
def test_device_shards_reproduce_distributed_sampler(n, world, shuffle, drop_last):
    ds = list(range(n))
    for epoch in (0, 3):
        for rank in range(world):
            ref = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=5,
                                     drop_last=drop_last)
            ref.set_epoch(epoch)
            ours = sampler_indices(n, world, rank, shuffle, 5, epoch, drop_last)
            assert ours.tolist() == list(iter(ref))


def _both(ds, world, rank, train):
    spec = LoaderSpec(8, world, rank, train, seed=3)
    dev, tor = DeviceLoader(ds, spec), TorchLoader(ds, spec)
    return dev, tor


@pytest.mark.parametrize("train", [True, False])
def test_torch_and_device_loaders_yield_identical_batches(cifar_root, train):
    ds, _ = load_cifar("cifar10", str(cifar_root), download=False, verify=False)
    seen = []
    for rank in range(2):
        dev, tor = _both(ds, 2, rank, train)
        for epoch in (0, 1):
            dev.set_epoch(epoch)
            tor.set_epoch(epoch)
            assert len(dev) == len(tor)
            for (xd, yd, id_), (xt, yt, it) in zip(dev, tor):
                assert torch.equal(xd, xt) and torch.equal(yd, yt) and torch.equal(id_, it)
                if epoch == 0:
                    seen.append(id_)
    idx = torch.cat(seen)
    if train:   # disjoint shards; only the incomplete last batches are dropped
        assert len(set(idx.tolist())) == len(idx)
    else:       # every example at least once; extra ones are the sampler's padding
        assert set(idx.tolist()) == set(range(len(ds))) and len(idx) - len(ds) < 2


def test_device_loader_order_moves_on_with_the_epoch(cifar_root):
    ds, _ = load_cifar("cifar10", str(cifar_root), download=False, verify=False)
    dev, _ = _both(ds, 1, 0, True)
    orders = []
    for epoch in (0, 1, 0):
        dev.set_epoch(epoch)
        orders.append(torch.cat([i for _, _, i in dev]).tolist())
    assert orders[0] == orders[2] and orders[0] != orders[1]


def test_augmented_batches_are_exact_padded_crops(cifar_root):
    ds, _ = load_cifar("cifar10", str(cifar_root), download=False, verify=False)
    torch.manual_seed(0)
    dev = DeviceLoader(ds, LoaderSpec(16, train=True, augment=True))
    x, _, idx = next(iter(dev))
    padded = torch.nn.functional.pad(ds.images[idx].float() / 255, (4, 4, 4, 4))
    for b in range(len(idx)):
        assert any(torch.equal(x[b], c) for dy in range(9) for dx in range(9)
                   for c in (padded[b, :, dy:dy + 32, dx:dx + 32],
                             padded[b, :, dy:dy + 32, dx:dx + 32].flip(-1))), b


@pytest.mark.parametrize("loader", ["device", "torch"])
def test_cifar_recipe_trains_on_the_tiny_archive(cifar_root, tmp_path, loader):
    cfg = load_config(["recipe=basic_linf", f"data.root={cifar_root}", "data.verify_checksums=false",
                       f"data.loader={loader}", "data.val_size=13", "data.batch_size=16",
                       "data.eval_batch_size=16", "optim.epochs=1", "log.progress=never",
                       f"run_dir={tmp_path / 'run'}"])
    results = fit(cfg)
    assert results["val_examples"] == 13 and results["test_examples"] == PER_BATCH


def test_uint8_and_float_sets_give_the_same_device_batches():
    imgs = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    a = DeviceLoader(IndexedImages(imgs, torch.arange(10)), LoaderSpec(5))
    b = DeviceLoader(IndexedImages(imgs.float() / 255, torch.arange(10)), LoaderSpec(5))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))


@pytest.fixture(scope="module")
def betons(cifar_root):
    pytest.importorskip("ffcv", reason="make ffcv-deps && pip install -e '.[ffcv]'")
    from distadv.data import build_splits
    from distadv.data.ffcv import write_betons
    cfg = load_config(["recipe=basic_linf", f"data.root={cifar_root}",
                       "data.verify_checksums=false", "data.val_size=13"])
    splits = build_splits(cfg.data)
    return cfg, splits, write_betons(splits, cfg.data)


def _by_index(loader):
    return {int(i): (x, int(y)) for xb, yb, ib in loader for x, y, i in zip(xb, yb, ib)}


@pytest.mark.parametrize("split,train", [("train", True), ("val", False), ("test", False)])
def test_three_loaders_yield_pixel_identical_examples(betons, split, train):
    from distadv.data.ffcv import FFCVLoader
    cfg, splits, paths = betons
    ds = getattr(splits, split)
    spec = LoaderSpec(8, train=train, seed=3)
    loaders = {
        "device": DeviceLoader(ds, spec),
        "torch": TorchLoader(ds, spec),
        "ffcv": FFCVLoader(paths[split], replace(spec, num_workers=1))}
    seen = {name: _by_index(ld) for name, ld in loaders.items()}
    if not train:   # evaluation drops nothing
        assert all(set(s) == set(range(len(ds))) for s in seen.values())
    common = set.intersection(*(set(s) for s in seen.values()))
    assert len(common) >= len(ds) - 8
    for i in common:
        ref_x, ref_y = seen["device"][i]
        assert torch.equal(ref_x, ds.images[i].float() / 255) and ref_y == int(ds.labels[i])
        for name in ("torch", "ffcv"):
            assert torch.equal(seen[name][i][0], ref_x) and seen[name][i][1] == ref_y, (name, i)


def test_ffcv_augmentation_is_an_exact_padded_crop(betons):
    from distadv.data.ffcv import FFCVLoader
    _, splits, paths = betons
    loader = FFCVLoader(paths["train"], LoaderSpec(16, train=True, augment=True, num_workers=1))
    x, _, idx = next(iter(loader))
    padded = torch.nn.functional.pad(splits.train.images[idx].float() / 255, (4, 4, 4, 4))
    for b in range(len(idx)):
        assert any(torch.equal(x[b], c) for dy in range(9) for dx in range(9)
                   for c in (padded[b, :, dy:dy + 32, dx:dx + 32],
                             padded[b, :, dy:dy + 32, dx:dx + 32].flip(-1))), b


def test_ffcv_loader_resumes_at_the_next_epoch_order(betons):
    from distadv.data.ffcv import FFCVLoader
    _, _, paths = betons
    orders = []
    for epoch in (0, 1, 1):
        loader = FFCVLoader(paths["train"], LoaderSpec(8, train=True, num_workers=1))
        loader.set_epoch(epoch)
        orders.append(torch.cat([i for _, _, i in loader]).tolist())
    assert orders[1] == orders[2] and orders[0] != orders[1]


def test_missing_ffcv_is_a_clear_message(monkeypatch, tmp_path):
    from distadv.data import ffcv as ffcv_mod
    from distadv.errors import ConfigError
    monkeypatch.setitem(sys.modules, "ffcv", None)   # as if not installed
    with pytest.raises(ConfigError, match=r"make ffcv-deps.*pip install -e '\.\[ffcv\]'"):
        ffcv_mod.FFCVLoader(tmp_path / "x.beton", LoaderSpec(8, train=True, num_workers=1))


def _launch2(*args):
    import subprocess
    from tests.conftest import ROOT, run_env
    env = dict(run_env(), ACCELERATE_USE_CPU="1")
    cmd = launch_cmd(*args)
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_beton_is_a_clear_error(betons, tmp_path, damage):
    from distadv.data.ffcv import FFCVLoader
    bad = tmp_path / "val.beton"
    data = betons[2]["val"].read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a beton" * 64)
    with pytest.raises(DataError, match=r"is corrupt or not a \.beton .*tools/make_beton.py"):
        FFCVLoader(bad, LoaderSpec(8, num_workers=1))


def test_ffcv_rank_shards_are_disjoint_and_eval_covers_everything(betons, tmp_path):
    import json
    _, splits, paths = betons
    _launch2("tests/scripts/ffcv_shards.py", str(paths["train"].parent), str(tmp_path))
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["train"] and r1["train"] and not set(r0["train"]) & set(r1["train"])
    assert set(r0["val"]) | set(r1["val"]) == set(range(len(splits.val)))


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["ffcv", "device", "torch"])
def test_two_process_cifar_run_counts_every_example_once(betons, cifar_root, tmp_path, loader):
    import json
    run = tmp_path / "run"
    _launch2("distadv/train.py", "recipe=basic_linf", f"data.root={cifar_root}",
             "data.verify_checksums=false", f"data.loader={loader}", "data.val_size=13",
             "data.batch_size=16", "data.eval_batch_size=8", "optim.epochs=2",
             "log.progress=never", f"run_dir={run}")
    res = json.loads((run / "results.json").read_text())
    assert res["world_size"] == 2 and res["val_examples"] == 13 and res["test_examples"] == 13


def test_beton_is_fsynced_under_a_temporary_name_the_sweep_removes(tmp_path, monkeypatch, capsys):
    """Issue 16: each .beton is written to ``.NAME.tmp-PID`` (the pattern of checkpoint.py's
    stale-temporary sweep), the finished file and its folder are fsynced, then it is renamed;
    a killed writer's temporary of NAME is swept by the next write (another file's is not);
    the file in place is complete (every example, pixel-exact)."""
    pytest.importorskip("ffcv", reason="make ffcv-deps && pip install -e '.[ffcv]'")
    import os
    from omegaconf import OmegaConf
    from distadv.config import DataConfig
    from distadv.data import Splits
    from distadv.data.ffcv import FFCVLoader, beton_path, write_betons
    from distadv.engine.checkpoint import remove_stale_temporaries
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("the fsync spy names files through /proc/self/fd")
    images = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8)
    ds = IndexedImages(images, torch.arange(24) % 10)
    cfg = OmegaConf.structured(DataConfig(name="cifar10", root=str(tmp_path), val_size=0))
    folder = tmp_path / "ffcv"
    folder.mkdir()
    train_name = beton_path(cfg, "train").name
    (folder / f".{train_name}.tmp-99999").write_bytes(b"a killed writer's half beton")
    (folder / ".cifar100-val0-seed0-train.beton.tmp-99999").write_bytes(b"another writer's")
    synced, real_fsync = [], os.fsync

    def spy(fd):   # what was fsynced: its name at that moment, inode and size
        st = os.fstat(fd)
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), st.st_ino, st.st_size))
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", spy)
    paths = write_betons(Splits(ds, ds, ds, None), cfg)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert f"distadv: removed .{train_name}.tmp-99999, left by a writer" in capsys.readouterr().out
    other = folder / ".cifar100-val0-seed0-train.beton.tmp-99999"
    assert other.is_file()                          # not this writer's file: left alone
    other.unlink()
    by_inode = {ino: (name, size) for name, ino, size in synced}
    assert folder.stat().st_ino in by_inode                    # the folder (the renames)
    temporaries = []
    for split, path in paths.items():
        st = path.stat()
        name, size = by_inode[st.st_ino]        # this very file was fsynced, at its full size
        assert size == st.st_size and os.path.dirname(name) == str(folder)
        temporaries.append(os.path.basename(name))
        assert temporaries[-1] == f".{path.name}.tmp-{os.getpid()}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths.values())
    # A killed writer's leftover under that name is what the sweep removes; the betons stay.
    (folder / temporaries[0]).write_bytes(b"half a beton")
    assert [p.name for p in remove_stale_temporaries(folder)] == [temporaries[0]]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths.values())
    for path in paths.values():
        loader = FFCVLoader(path, LoaderSpec(8, train=False, num_workers=1))
        seen = {int(i): x for xb, _, ib in loader for x, i in zip(xb, ib)}
        assert sorted(seen) == list(range(24))
        assert all(torch.equal(seen[i], images[i].float() / 255) for i in seen)
