"""Build the pieces of a run (data, model, optimizer, schedule) and prepare them for the launch."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..data import Splits, build_splits
from ..models import create_model, model_kwargs
from ..models.lwta import record_kl
from ..strategies import replays_per_batch
from . import checkpoint as ck
from .loaders import eval_loaders, per_rank, train_loader
from .optim import build_optimizer, build_scheduler
from .setup import channels_last, load_optimizer, load_partitions, prepare


@dataclass
class RunParts:
    """Everything the epoch loop needs. ``raw_model`` shares its tensors with ``model`` (the
    prepared wrapper) and ``attack_model`` (unwrapped, maybe compiled) and has plain keys."""

    splits: Splits
    model: nn.Module
    raw_model: nn.Module
    attack_model: nn.Module
    optimizer: Any
    scheduler: Any
    train_dl: Any
    val_dl: Any
    test_dl: Any
    steps_per_epoch: int              # batches per epoch
    memory_format: torch.memory_format
    replays: int = 1                  # optimizer steps per batch (Free-AT's m)

    @property
    def updates_per_epoch(self) -> int:
        """Optimizer steps per epoch: what the schedule and EMA count."""
        return self.steps_per_epoch * self.replays


def model_for(cfg, info) -> nn.Module:
    """The run's model (``cfg.model``) for a data set's shape and statistics (``info``);
    training and evaluation both build it here."""
    kw = model_kwargs(cfg.model)   # width, activation, blocks/widths, LWTA's keys
    return create_model(cfg.model.name, info.num_classes, info.in_channels, info.mean, info.std,
                        cfg.model.input_noise, info.image_size, **kw)


def build_run(cfg, accelerator, splits: Optional[Splits] = None, state: Optional[dict] = None,
              ckpt_dir: Optional[Path] = None) -> RunParts:
    """Create and prepare a run; ``state`` (a ``latest`` checkpoint) restores model, optimizer
    and schedule before ``prepare`` (the grad scaler and DeepSpeed partitions from ``ckpt_dir``
    after it)."""
    splits = splits or build_splits(cfg.data, with_extra=True)
    info = splits.info
    torch.manual_seed(cfg.seed)                        # same initial weights on every rank
    model = model_for(cfg, info)
    if cfg.model.get("lwta_kl", 0.0):
        record_kl(model)        # the LWTA layers keep their KL term for the loss
    world = accelerator.num_processes
    train_dl = train_loader(splits, cfg.data, accelerator, cfg.seed, cfg.runtime.max_steps_per_epoch)
    val_dl, test_dl = eval_loaders(splits, cfg.data, accelerator, cfg.seed)
    if state is not None and hasattr(train_dl, "load_state_dict"):
        train_dl.load_state_dict(state.get("sampler"))  # generated sets: where the draws were
    steps = len(train_dl) if cfg.runtime.max_steps_per_epoch is None else min(
        len(train_dl), cfg.runtime.max_steps_per_epoch)
    replays = replays_per_batch(cfg.strategy)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps * replays)
    if state is not None:
        ck.check_keys(model, state["model"], state.get("source", ckpt_dir))  # copied in from another model
        model.load_state_dict(state["model"])
        load_optimizer(accelerator, optimizer, state)
        scheduler.load_state_dict(state["scheduler"])
    raw_model = model
    nhwc = channels_last(accelerator, cfg)
    model, optimizer, attack_model = prepare(accelerator, model, optimizer, cfg,
                                             per_rank(cfg.data.batch_size, world, "data.batch_size"),
                                             nhwc)
    if state is not None and accelerator.scaler is not None and state.get("scaler"):
        accelerator.scaler.load_state_dict(state["scaler"])
    if state is not None:
        load_partitions(accelerator, optimizer, ckpt_dir, state["epoch"])
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    return RunParts(splits, model, raw_model, attack_model, optimizer, scheduler, train_dl,
                    val_dl, test_dl, steps, fmt, replays)
