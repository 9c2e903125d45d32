"""Generated training images (DM-AT style): memory-mapped ``.npy`` sets on disk (``store``),
the per-batch mix of real and generated rows (``sampler``) and the training loader that
assembles those batches (``loader``)."""
from __future__ import annotations

from typing import List

from .loader import MixedLoader
from .sampler import MixSampler, MixSpec, split_counts
from .store import GeneratedSet, SetWriter, open_set


def extra_paths(cfg) -> List[str]:
    """``data.extra`` as a list of folders (one path or a list of them; empty when unset)."""
    if cfg.extra is None or cfg.extra == "":
        return []
    return [str(cfg.extra)] if isinstance(cfg.extra, str) else [str(p) for p in cfg.extra]


def open_extra(cfg, info) -> List[GeneratedSet]:
    """Open and verify every set of ``data.extra`` for the data set described by ``info``
    (``DataInfo``): images of its (H, W, C), labels below its class count."""
    shape = (info.image_size, info.image_size, info.in_channels)
    return [open_set(p, shape, info.num_classes) for p in extra_paths(cfg)]


def mix_spec(cfg, sets: List[GeneratedSet], n_real: int, seed: int) -> MixSpec:
    """The run's mix from ``data.*``: shares default to the sets' sizes (as one set made of
    all of them), the epoch to the training split's size."""
    shares = list(cfg.extra_shares) if cfg.extra_shares else [s.count for s in sets]
    return MixSpec(cfg.batch_size, cfg.extra_fraction, shares, cfg.extra_replacement,
                   cfg.epoch_samples or n_real, seed)


__all__ = ["GeneratedSet", "MixSampler", "MixSpec", "MixedLoader", "SetWriter", "extra_paths",
           "mix_spec", "open_extra", "open_set", "split_counts"]
