"""Data loaders sharded across ranks with torch's DistributedSampler."""
from __future__ import annotations

from torch.utils.data import DataLoader, DistributedSampler

from ..errors import ConfigError


def per_rank(global_batch: int, world: int, key: str) -> int:
    """Split a global batch evenly across ``world`` processes (or explain the fix)."""
    if global_batch % world:
        raise ConfigError(f"{key}={global_batch} is not divisible by the {world} processes; "
                          f"use a multiple of {world}")
    return global_batch // world


def make_loaders(splits, cfg, world: int, rank: int, seed: int):
    """Train / val / test loaders for this rank.

    Train: shuffled by (seed, epoch) through ``DistributedSampler.set_epoch``, so a resumed
    epoch replays the same order, and the union of the ranks' k-th batches is the k-th batch of a
    1-process run with the same global batch. The last incomplete batch is dropped.
    Eval: unshuffled; the sampler pads ranks to equal length with duplicates, which
    ``engine.evaluate`` removes by example index before counting.
    """
    def loader(ds, batch, train):
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=train,
                                     seed=seed, drop_last=train)
        return DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=train,
                          num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)

    b = per_rank(cfg.batch_size, world, "data.batch_size")
    eb = per_rank(cfg.eval_batch_size, world, "data.eval_batch_size")
    train = loader(splits.train, b, True)
    if len(train) == 0:
        raise ConfigError(f"data.batch_size={cfg.batch_size} exceeds the {len(splits.train)} "
                          "training examples; lower it")
    return train, loader(splits.val, eb, False), loader(splits.test, eb, False)
