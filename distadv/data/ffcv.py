"""FFCV .beton files: writing the train/val/test splits, and a loader over them.

Install: the system libraries first (`make ffcv-deps`: libturbojpeg, OpenCV), then
`pip install -e '.[ffcv]'`. Facts that shape this file (../shared/notes/ffcv.md): images are
stored raw (pixel-exact round trip) and leave the pipeline as uint8 (normalisation is the
model's first layer); ``Loader`` drops the last batch unless told not to, so evaluation passes
``drop_last=False``; ``distributed=True`` pads ranks with duplicates, which evaluation removes
by index; there is no set_epoch, so resuming sets ``next_epoch``; more workers than cores is a
numba error, so workers are capped at cores per rank.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..engine.checkpoint import commit_file, remove_stale_temporaries, temporary_path
from ..errors import ConfigError, DataError
from .base import LoaderSpec

_INSTALL = ("the ffcv loader needs FFCV and its system libraries: run `make ffcv-deps` "
            "(apt: libturbojpeg0-dev libopencv-dev pkg-config g++) and then "
            "`pip install -e '.[ffcv]'`; or use data.loader=device")


def _ffcv():
    """The ffcv package with the submodules used here, or a ConfigError saying how to install."""
    try:
        import ffcv
        import ffcv.fields.decoders  # noqa: F401  (also imports ffcv.fields)
        import ffcv.loader  # noqa: F401
        import ffcv.transforms  # noqa: F401
        import ffcv.writer  # noqa: F401
    except Exception as exc:  # ImportError, or OSError when the C libraries are missing
        first = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise ConfigError(f"{_INSTALL} ({type(exc).__name__}: {first})") from None
    return ffcv


def beton_path(cfg, split: str) -> Path:
    """Where the .beton of ``split`` lives: ``<data.root or data/>/ffcv/`` (a data set's
    default root may be a package's read-only folder, so it is never written into). The name
    carries the validation split's settings, so a file written for another split can never be
    read by mistake."""
    return (Path(cfg.root or "data") / "ffcv" /
            f"{cfg.name}-val{cfg.val_size}-seed{cfg.split_seed}-{split}.beton")


class _AsArrays:
    """Indexable view handing FFCV (HWC uint8 image, label, index) tuples. FFCV stores RGB
    only: a grey image is written as three equal channels (the loader keeps the first)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        img = self.ds.images[i]
        img = img if img.dtype == torch.uint8 else (img * 255).round().to(torch.uint8)
        img = img.expand(3, -1, -1) if img.shape[0] == 1 else img
        return img.permute(1, 2, 0).contiguous().numpy(), int(self.ds.labels[i]), int(i)


def write_betons(splits, cfg, num_workers: int = 1) -> dict:
    """Write train/val/test .beton files of ``splits`` (raw RGB, label, index fields). Each is
    written to a temporary name (``.NAME.tmp-PID``), fsynced and renamed: a crash leaves the old
    file or the whole new one, and the next write of NAME removes a killed writer's temporary
    (only NAME's: data sets share the folder, and may be written at the same time)."""
    ffcv = _ffcv()
    out = {}
    for split in ("train", "val", "test"):
        ds = getattr(splits, split)
        if ds.images.shape[1] not in (1, 3) or ds.images.dtype != torch.uint8:
            raise ConfigError(f"FFCV stores 8-bit grey or RGB images pixel-exactly; data set "
                              f"'{cfg.name}' has {ds.images.shape[1]} channel(s) of "
                              f"{ds.images.dtype}")
        path = beton_path(cfg, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(path.parent, path.name):
            print(f"distadv: removed {stale.name}, left by a writer that was killed", flush=True)
        tmp = temporary_path(path)
        try:
            w = ffcv.writer.DatasetWriter(str(tmp), {
                "image": ffcv.fields.RGBImageField(write_mode="raw"),
                "label": ffcv.fields.IntField(), "index": ffcv.fields.IntField()},
                num_workers=num_workers)
            w.from_indexed_dataset(_AsArrays(ds))
            commit_file(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)     # a failed write leaves no temporary behind
        out[split] = path
    return out


class FFCVLoader:
    """Batches ``(x, y, index)`` of one rank from a .beton, on ``device``, x in [0, 1];
    ``channels`` = 1 keeps the first of the three stored channels (grey data sets)."""

    def __init__(self, path: Path, spec: LoaderSpec, channels: int = 3):
        ffcv = _ffcv()
        batch, world, train, device = spec.batch, spec.world, spec.train, spec.device
        self.channels = channels
        if not Path(path).is_file():
            raise DataError(f"{path} not found; write it with `python tools/make_beton.py "
                            f"recipe=... data.root=...` (same data.val_size and data.split_seed)")
        t, d = ffcv.transforms, ffcv.fields.decoders
        image = [d.SimpleRGBImageDecoder()]
        if spec.augment:
            image += [t.RandomHorizontalFlip(), t.RandomTranslate(padding=4)]
        image += [t.ToTensor(), t.ToDevice(torch.device(device), non_blocking=True),
                  t.ToTorchImage()]
        as_long = lambda: [d.IntDecoder(), t.ToTensor(), t.Squeeze(),  # noqa: E731
                           t.ToDevice(torch.device(device), non_blocking=True)]
        cores = max(1, (os.cpu_count() or 1) // world)
        order = ffcv.loader.OrderOption
        try:  # FFCV reads the header and the allocation table here
            self.loader = ffcv.loader.Loader(
                str(path), batch_size=batch, num_workers=max(1, min(spec.num_workers or 1, cores)),
                order=order.RANDOM if train else order.SEQUENTIAL, drop_last=train,
                distributed=world > 1, seed=spec.seed,
                pipelines={"image": image, "label": as_long(), "index": as_long()})
        except (AssertionError, ValueError, IndexError, OSError) as exc:
            # measured: a truncated file -> ValueError, another format -> AssertionError
            raise DataError(f"{path} is corrupt or not a .beton ({type(exc).__name__}: "
                            f"{str(exc)[:100]}); delete it and write it again with "
                            "`python tools/make_beton.py recipe=... data.root=...`") from None

    def set_epoch(self, epoch: int) -> None:
        """FFCV has no set_epoch: its epoch counter decides the order (set it on resume)."""
        self.loader.next_epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y, idx in self.loader:
            x = x[:, :1] if self.channels == 1 else x
            yield x.float().div_(255.0), y.long().view(-1), idx.long().view(-1)


__all__ = ["write_betons", "beton_path", "FFCVLoader"]
