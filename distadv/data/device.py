"""A loader that keeps a whole split resident on the device (airbench style).

uint8 images live on the accelerator (CIFAR-10 train: 150 MB), batches are gathered by index,
converted to [0, 1] floats and augmented there in one batched operation: no worker processes,
no host-to-device copies per batch. The order and the rank shards reproduce torch's
DistributedSampler exactly (same permutation for (seed, epoch), same padding), so switching
loaders never changes which examples a run sees.
"""
from __future__ import annotations

import math
from typing import Iterator, Tuple

import torch

from .augment import random_crop_flip
from .base import IndexedImages, LoaderSpec


def sampler_indices(n: int, world: int, rank: int, shuffle: bool, seed: int, epoch: int,
                    drop_last: bool) -> torch.Tensor:
    """The indices ``torch.utils.data.DistributedSampler`` gives ``rank`` for ``epoch``."""
    if shuffle:
        g = torch.Generator()
        g.manual_seed(seed + epoch)
        indices = torch.randperm(n, generator=g)
    else:
        indices = torch.arange(n)
    if drop_last and n % world:
        total = math.ceil((n - world) / world) * world
        indices = indices[:total]
    else:
        total = math.ceil(n / world) * world
        pad = total - n
        if pad:
            reps = math.ceil(pad / n)
            indices = torch.cat([indices, indices.repeat(reps)[:pad]])
    return indices[rank:total:world]


class DeviceLoader:
    """Batches ``(x, y, index)`` of one rank's shard, already on ``device``.

    ``x`` is float32 in [0, 1]; with ``augment`` each training image is a random crop of its
    4-pixel zero-padded self, flipped or not (the global RNG, reseeded per epoch and rank).
    """

    def __init__(self, ds: IndexedImages, spec: LoaderSpec):
        self.images = ds.images.to(spec.device)
        self.labels = ds.labels.to(spec.device)
        self.batch_size, self.world, self.rank = spec.batch, spec.world, spec.rank
        self.shuffle = self.drop_last = spec.train
        self.seed, self.augment = spec.seed, spec.augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (as DistributedSampler.set_epoch)."""
        self.epoch = epoch

    def _shard(self) -> torch.Tensor:
        return sampler_indices(len(self.labels), self.world, self.rank, self.shuffle, self.seed,
                               self.epoch, self.drop_last)

    def __len__(self) -> int:
        n = len(self._shard())
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        shard = self._shard().to(self.images.device)
        for b in range(len(self)):
            idx = shard[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx]
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.clone()
            if self.augment:
                x = random_crop_flip(x)
            yield x, self.labels[idx], idx
