"""Data loaders for one rank, chosen by ``data.loader``; all yield device batches
``(x, y, index)`` with x in [0, 1], training batches already augmented."""
from __future__ import annotations

from torch.utils.data import DataLoader, DistributedSampler

from ..data import LoaderSpec, random_crop_flip
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


def make_loaders(splits, cfg, world: int, rank: int, seed: int, device):
    """Train / val / test loaders for this rank (``cfg`` is the DataConfig).

    Train: shuffled by (seed, epoch) via ``set_epoch``, so a resumed epoch replays the same
    order, and the union of the ranks' k-th batches is the k-th batch of a 1-process run with the
    same global batch; the last incomplete batch is dropped. Eval: unshuffled; ranks are padded
    to equal length with duplicates, which ``eval.runner`` removes by example index.
    """
    def loader(ds, batch, train):
        spec = LoaderSpec(batch, world, rank, train, seed, train and cfg.augment, device,
                          cfg.num_workers)
        if cfg.loader == "device":
            return DeviceLoader(ds, spec)
        if cfg.loader == "ffcv":
            split = "train" if train else ("val" if ds is splits.val else "test")
            return FFCVLoader(beton_path(cfg, split), spec, splits.info.in_channels)
        return TorchLoader(ds, spec)

    b = per_rank(cfg.batch_size, world, "data.batch_size")
    eb = per_rank(cfg.eval_batch_size, world, "data.eval_batch_size")
    train = loader(splits.train, b, True)
    if len(train) == 0:
        raise ConfigError(f"data.batch_size={cfg.batch_size} exceeds the {len(splits.train)} "
                          "training examples; lower it")
    return train, loader(splits.val, eb, False), loader(splits.test, eb, False)
