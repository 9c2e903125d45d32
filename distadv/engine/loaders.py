"""Data loaders for one rank, chosen by ``data.loader``; all yield device batches
``(x, y, index)`` with x in [0, 1], training batches already augmented."""
from __future__ import annotations

from torch.utils.data import DataLoader, DistributedSampler

from ..data import random_crop_flip
from ..data.device import DeviceLoader
from ..data.ffcv import FFCVLoader, beton_path
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

    def __init__(self, ds, batch: int, world: int, rank: int, train: bool, seed: int,
                 augment: bool, device, num_workers: int):
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=train, seed=seed,
                                     drop_last=train)
        self.dl = DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=train,
                             num_workers=num_workers, persistent_workers=num_workers > 0)
        self.device, self.augment = device, augment

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


def make_loaders(splits, cfg, world: int, rank: int, seed: int, device):
    """Train / val / test loaders for this rank (``cfg`` is the DataConfig).

    Train: shuffled by (seed, epoch) via ``set_epoch``, so a resumed epoch replays the same
    order, and the union of the ranks' k-th batches is the k-th batch of a 1-process run with the
    same global batch; the last incomplete batch is dropped. Eval: unshuffled; ranks are padded
    to equal length with duplicates, which ``eval.runner`` removes by example index.
    """
    def loader(ds, batch, train):
        aug = train and cfg.augment
        if cfg.loader == "device":
            return DeviceLoader(ds, batch, world, rank, train, train, seed, aug, device)
        if cfg.loader == "ffcv":
            split = "train" if train else ("val" if ds is splits.val else "test")
            return FFCVLoader(beton_path(cfg, split), batch, world, rank, train, seed, aug,
                              device, cfg.num_workers, splits.info.in_channels)
        return TorchLoader(ds, batch, world, rank, train, seed, aug, device, cfg.num_workers)

    b = per_rank(cfg.batch_size, world, "data.batch_size")
    eb = per_rank(cfg.eval_batch_size, world, "data.eval_batch_size")
    train = loader(splits.train, b, True)
    if len(train) == 0:
        raise ConfigError(f"data.batch_size={cfg.batch_size} exceeds the {len(splits.train)} "
                          "training examples; lower it")
    return train, loader(splits.val, eb, False), loader(splits.test, eb, False)
