"""SGD and learning-rate schedules, defined per optimizer step."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..models import is_noise_param


def build_optimizer(model: nn.Module, cfg) -> torch.optim.SGD:
    """SGD with momentum/nesterov; PNI noise scales are kept out of weight decay, and with
    ``optim.no_decay_bn_bias`` so are BatchNorm's affine parameters and every bias (all the
    1-d parameters), as DM-Improves-AT and most leaderboard recipes do."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = is_noise_param(name) or (cfg.get("no_decay_bn_bias", False) and p.dim() <= 1)
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


@dataclass
class LRFactor:
    """The LR multiplier at optimizer step ``t``; a picklable plain object so that the
    scheduler's state_dict holds only numbers (checkpoints load with weights_only=True)."""

    schedule: str
    total: int
    milestones: tuple
    gamma: float
    pct_start: float
    warmup: int = 0          # cosine: steps of linear warm-up before the cosine decay

    def __call__(self, t: int) -> float:
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "multistep":
            return self.gamma ** sum(t >= m for m in self.milestones)
        if self.schedule == "cosine" and self.warmup:
            if t < self.warmup:
                return (t + 1) / self.warmup      # never 0: the first step already moves
            frac = min((t - self.warmup) / max(self.total - self.warmup, 1), 1.0)
            return 0.5 * (1 + math.cos(math.pi * frac))
        frac = min(t / max(self.total, 1), 1.0)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * frac))
        # onecycle: linear warm-up to the peak at pct_start, then linear decay to 0
        # (the piecewise-linear "cyclic" schedule of Rice et al. / Wong et al.).
        if frac < self.pct_start:
            return frac / self.pct_start
        return max(0.0, (1 - frac) / (1 - self.pct_start))


def build_scheduler(optimizer, cfg, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over optimizer steps; multistep milestones are given in epochs, the cosine
    warm-up (``optim.warmup``) as a fraction of all steps (DM-Improves-AT: 0.025)."""
    total = cfg.epochs * steps_per_epoch
    factor = LRFactor(cfg.schedule, total, tuple(m * steps_per_epoch for m in cfg.milestones),
                      cfg.gamma, cfg.pct_start, int(round(cfg.get("warmup", 0.0) * total)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
