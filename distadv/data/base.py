"""What every data set hands the rest of the toolkit: tensors in memory plus their metadata."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, Tuple

import torch
from torch.utils.data import Dataset


def unit_floats(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1]; float images unchanged (already in [0, 1])."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class IndexedImages(Dataset):
    """Images (uint8 0-255 or float in [0, 1]) with labels; items are ``(x, y, index)``.

    The index lets evaluation count every example exactly once across ranks, even when a
    distributed sampler pads the last batch with duplicates.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
        return unit_floats(self.images[i]), self.labels[i], i

    def subset(self, idx: torch.Tensor) -> "IndexedImages":
        """A new data set holding the rows ``idx`` (copied, so indices restart at 0)."""
        return IndexedImages(self.images[idx], self.labels[idx])


@dataclass
class DataInfo:
    """Shape and normalisation of a data set (the model's first layer uses mean/std)."""

    num_classes: int
    in_channels: int
    image_size: int
    mean: Sequence[float]
    std: Sequence[float]


@dataclass
class Splits:
    """Train (minus validation), validation (held out from train) and test sets, and the
    generated sets mixed into training batches (``data.extra``)."""

    train: IndexedImages
    val: IndexedImages
    test: IndexedImages
    info: DataInfo
    extra: list = field(default_factory=list)  # generated training sets (GeneratedSet), if any


def split_train_val(full: IndexedImages, val_size: int, seed: int):
    """Hold out ``val_size`` examples of ``full``, chosen by a permutation seeded by ``seed``.

    The split depends on the seed and the data only, so it is the same on every rank and on
    every resume.
    """
    if not 0 < val_size < len(full):
        raise ValueError(f"data.val_size must be in [1, {len(full) - 1}], got {val_size}")
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
    return full.subset(perm[val_size:].sort().values), full.subset(perm[:val_size].sort().values)


@dataclass(frozen=True)
class LoaderSpec:
    """How one rank reads one split: every loader (torch, device, FFCV, mixed) takes one.

    ``batch`` is the per-rank batch. ``train``: shuffled by (seed, epoch) and the last incomplete
    batch dropped (DistributedSampler's shuffle and drop_last); else in order, ranks padded to
    equal length with duplicates. ``augment``: random crop (pad 4) + flip on the device.
    """

    batch: int
    world: int = 1
    rank: int = 0
    train: bool = False
    seed: int = 0
    augment: bool = False
    device: Any = "cpu"
    num_workers: int = 0
