"""The training loader of a run with generated data: each batch is real images of the
training split and generated images of memory-mapped sets, mixed as ``MixSampler`` says.

Batches are assembled in the main process: the real rows are gathered from the in-memory
split (on the device with ``data.loader=device``), the generated rows are copied out of the
maps (a few hundred rows of 3 KB each per batch, from the page cache), moved to the device and
augmented there with the same batched crop + flip as the other loaders. Only the training
loader mixes: validation and test are the real splits, read by the usual loaders.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import torch

from ..augment import random_crop_flip
from ..base import IndexedImages, LoaderSpec, unit_floats
from .sampler import REAL, MixSampler, MixSpec
from .store import GeneratedSet


class MixedLoader:
    """Batches ``(x, y, index)`` of one rank: ``x`` float in [0, 1] on the device, augmented if
    the spec says so; ``index`` is the row in the real split for real images and
    ``len(real) + offset of the set + row`` for generated ones. ``len()`` is the epoch's steps
    (``max_steps`` caps it, as ``runtime.max_steps_per_epoch`` does for the other loaders)."""

    def __init__(self, real: IndexedImages, sets: List[GeneratedSet], mix: MixSpec,
                 spec: LoaderSpec, max_steps: Optional[int] = None):
        # The real split lives on the device (CIFAR-10: 150 MB), as with data.loader=device.
        self.real_images, self.real_labels = real.images.to(spec.device), real.labels.to(spec.device)
        self.sets, self.spec, self.shape = sets, spec, tuple(real.images.shape[1:])
        self.sampler = MixSampler(len(real), [s.identity for s in sets], mix, max_steps)
        self.offsets = [len(real)]
        for s in sets[:-1]:
            self.offsets.append(self.offsets[-1] + s.count)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the draws of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.sampler.steps

    def state_dict(self) -> Dict:
        """The sampler's state after the current epoch (what a resume continues from)."""
        return self.sampler.state_dict(self.epoch + 1)

    def load_state_dict(self, state: Optional[Dict]) -> None:
        """Continue the draws from a checkpoint's state (``MixSampler.load_state_dict``)."""
        self.sampler.load_state_dict(state)

    def _rows(self) -> Tuple[torch.Tensor, torch.Tensor]:
        src, idx = self.sampler.epoch(self.epoch)
        return src[:, self.spec.rank::self.spec.world], idx[:, self.spec.rank::self.spec.world]

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        src, idx = self._rows()
        device = self.spec.device
        for s in range(len(self)):
            n = src.shape[1]
            x = torch.empty((n, *self.shape), dtype=torch.float32, device=device)
            y = torch.empty(n, dtype=torch.long, device=device)
            ids = torch.empty(n, dtype=torch.long, device=device)
            at = (src[s] == REAL).nonzero().flatten()
            rows = idx[s, at].to(device)
            x[at], y[at], ids[at] = unit_floats(self.real_images[rows]), self.real_labels[rows], rows
            for j, gen in enumerate(self.sets):
                at = (src[s] == j).nonzero().flatten()
                if len(at):
                    rows = idx[s, at]
                    gx, gy = gen.gather(rows.numpy())
                    gx = torch.from_numpy(gx).permute(0, 3, 1, 2)      # HWC uint8 -> CHW
                    x[at] = unit_floats(gx.to(device))
                    y[at] = torch.from_numpy(gy).to(device)
                    ids[at] = (rows + self.offsets[j]).to(device)
            if self.spec.augment:
                x = random_crop_flip(x)
            yield x, y, ids
