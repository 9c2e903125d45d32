"""Data loaders for one rank, chosen by ``data.loader``; all yield device batches
``(x, y, index)`` with x in [0, 1], training batches already augmented."""
from __future__ import annotations

from typing import Optional

from torch.utils.data import DataLoader, DistributedSampler

from ..data import LoaderSpec, random_crop_flip
from ..data.device import DeviceLoader
from ..data.ffcv import FFCVLoader, beton_path
from ..data.generated import MixedLoader, mix_spec
from ..errors import ConfigError


def per_rank(global_batch: int, world: int, key: str) -> int:
    """Split a global batch evenly across ``world`` processes (or explain the fix)."""
    if global_batch % world:
        raise ConfigError(f"{key}={global_batch} is not divisible by the {world} processes; "
                          f"use a multiple of {world}")
    return global_batch // world


class TorchLoader:
    """torch DataLoader over a DistributedSampler; batches go to ``device`` and are augmented
    there (batched crop + flip, the same operation as the device loader)."""

    def __init__(self, ds, spec: LoaderSpec):
        sampler = DistributedSampler(ds, num_replicas=spec.world, rank=spec.rank,
                                     shuffle=spec.train, seed=spec.seed, drop_last=spec.train)
        self.dl = DataLoader(ds, batch_size=spec.batch, sampler=sampler, drop_last=spec.train,
                             num_workers=spec.num_workers,
                             persistent_workers=spec.num_workers > 0)
        self.device, self.augment = spec.device, spec.augment

    def set_epoch(self, epoch: int) -> None:
        """Order of ``epoch`` (DistributedSampler.set_epoch)."""
        self.dl.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dl)

    def __iter__(self):
        for x, y, idx in self.dl:
            x = x.to(self.device, non_blocking=True)
            if self.augment:
                x = random_crop_flip(x)
            yield x, y.to(self.device, non_blocking=True), idx.to(self.device)


def _loader(ds, splits, cfg, spec: LoaderSpec):
    """The ``data.loader`` loader of one split (``ds``, one of ``splits``')."""
    if cfg.loader == "device":
        return DeviceLoader(ds, spec)
    if cfg.loader == "ffcv":
        split = "train" if ds is splits.train else ("val" if ds is splits.val else "test")
        return FFCVLoader(beton_path(cfg, split), spec, splits.info.in_channels)
    return TorchLoader(ds, spec)


def _spec(cfg, accelerator, seed: int, train: bool) -> LoaderSpec:
    world = accelerator.num_processes
    batch = per_rank(cfg.batch_size, world, "data.batch_size") if train else \
        per_rank(cfg.eval_batch_size, world, "data.eval_batch_size")
    return LoaderSpec(batch, world, accelerator.process_index, train, seed,
                      train and cfg.augment, accelerator.device, cfg.num_workers)


def train_loader(splits, cfg, accelerator, seed: int, max_steps: Optional[int] = None):
    """This rank's training loader (``cfg`` is the DataConfig): shuffled by (seed, epoch) via
    ``set_epoch``, so a resumed epoch replays the same order, and the union of the ranks' k-th
    batches is the k-th batch of a 1-process run with the same global batch; the last
    incomplete batch is dropped. With generated sets (``splits.extra``) it is the mixed loader
    (``data/generated``), whose epoch is ``max_steps`` at most."""
    spec = _spec(cfg, accelerator, seed, True)
    if splits.extra:
        mix = mix_spec(cfg, splits.extra, len(splits.train), seed)
        loader = MixedLoader(splits.train, splits.extra, mix, spec, max_steps)
    else:
        loader = _loader(splits.train, splits, cfg, spec)
    if len(loader) == 0:
        raise ConfigError(f"data.batch_size={cfg.batch_size} exceeds the {len(splits.train)} "
                          "training examples; lower it")
    return loader


def eval_loaders(splits, cfg, accelerator, seed: int):
    """This rank's validation and test loaders: unshuffled; ranks are padded to equal length
    with duplicates, which ``eval.runner`` removes by example index. Never generated images."""
    spec = _spec(cfg, accelerator, seed, False)
    return _loader(splits.val, splits, cfg, spec), _loader(splits.test, splits, cfg, spec)
