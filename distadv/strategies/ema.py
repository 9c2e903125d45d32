"""EMA: an exponential moving average of the weights, validated, selected and tested in place
of the trained model (the average is what every RobustBench CIFAR-10 entry above 63 % reports).

Follows DM-Improves-AT's ``ema_update`` (Wang et al. 2023, wzekai99/DM-Improves-AT): after each
optimizer step n (0-based), with w = ``warmup`` x the run's optimizer steps,

    decay_n = 0                                   while n < w   (the average copies the model)
    decay_n = min(tau, (1 + n - w) / (10 + n - w)) after          (TF's dynamic decay)
    ema <- decay_n * ema + (1 - decay_n) * weights

and the BatchNorm buffers (all buffers) are copied from the model, not averaged. The update is
one fused ``torch._foreach_lerp_`` over the parameters plus one ``_foreach_copy_`` over the
buffers: a read of each tensor twice and a write once per step (BENCHMARKS.md: its cost).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
from torch import nn

from ..engine.setup import gather_partitions, master_partitions, split_into_partitions
from ..engine.side_copy import side_copy
from .addons import register_addon
from .base import Method


@dataclass
class EMAConfig:
    """``ema.*``: the moving average of the weights (off by default)."""

    enabled: bool = False       # keep an EMA of the weights (evaluated and saved instead)
    decay: float = 0.995        # tau, the decay once the dynamic ramp has passed it
    dynamic: bool = True        # TF-style min(tau, (1 + n) / (10 + n)) from the warm-up's end
    warmup: float = 0.0         # fraction of the run's optimizer steps copied, not averaged


def ema_decay(step: int, tau: float, warmup_steps: int, dynamic: bool = True) -> float:
    """The decay of update ``step`` (0-based); 0 during the warm-up (copy the weights)."""
    if step < warmup_steps:
        return 0.0
    n = step - warmup_steps
    return min(tau, (1.0 + n) / (10.0 + n)) if dynamic else tau


class EMA(Method):
    """The average lives in a plain fp32 copy of the module (same device, eval-ready). It is
    updated from the fp32 master weights after each step: the module's own parameters (plain,
    DDP: identical on every rank, so no communication; DeepSpeed fp32), or under DeepSpeed
    with bf16/fp16 weights each rank's flat fp32 partition of the masters (``engine/setup.py``:
    ``master_partitions``), never the rounded bf16 copies. There each rank averages its own
    partition (no communication per step) and the average is gathered into the module after
    the epoch's last step (one all-gather per epoch). ``state_dict``: the average's weights
    and the update count."""

    name = "ema"

    def __init__(self, cfg: EMAConfig, module: nn.Module, total_steps: int,
                 steps_per_epoch: int = 0, optimizer=None, masters=None):
        self.tau, self.dynamic = float(cfg.decay), bool(cfg.dynamic)
        self.warmup_steps = int(round(cfg.warmup * total_steps))
        self.steps_per_epoch, self.optimizer = steps_per_epoch, optimizer
        self.module = side_copy(module).float()   # the average starts at the model's weights
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.steps = 0
        self._src_params = [p for p in module.parameters()]
        self._src_buffers = [b for b in module.buffers()]
        self._params = [p for p in self.module.parameters()]
        self._buffers = [b for b in self.module.buffers()]
        self._masters = masters                   # DeepSpeed bf16/fp16: this rank's partitions
        self._parts = [m.detach().clone() for m in masters] if masters is not None else None

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step from the current master weights."""
        decay = ema_decay(self.steps, self.tau, self.warmup_steps, self.dynamic)
        if self._parts is not None:
            torch._foreach_lerp_(self._parts, self._masters, 1.0 - decay)
        else:
            src = [p.detach().float() for p in self._src_params]
            torch._foreach_lerp_(self._params, src, 1.0 - decay)    # ema + (1-d) * (w - ema)
        if self._buffers:
            torch._foreach_copy_(self._buffers, [b.detach() for b in self._src_buffers])
        self.steps += 1
        if self._parts is not None and self.steps_per_epoch and self.steps % self.steps_per_epoch == 0:
            self._gather()

    def _gather(self) -> None:
        """Every rank: the partitions' average into the module (before validation)."""
        whole = gather_partitions(self.optimizer, self._parts)
        with torch.no_grad():
            for p, mine in zip(self._src_params, self._params):
                mine.copy_(whole[id(p)])

    def after_step(self, state) -> None:
        self.update()

    def eval_model(self, state) -> nn.Module:
        return self.module

    def state_dict(self) -> Dict:
        return {"weights": {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()},
                "steps": self.steps}

    def load_state_dict(self, state: Dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.steps = int(state["steps"])
        if self._parts is not None:   # each rank's partitions, cut from the saved average
            values = {id(p): mine.detach() for p, mine in zip(self._src_params, self._params)}
            self._parts = split_into_partitions(self.optimizer, values)


def check_ema(c: EMAConfig, cfg) -> str:
    """One line naming the first invalid ``ema.*`` value, or ''."""
    if not 0 <= c.decay < 1:
        return f"ema.decay must be in [0, 1) (e.g. 0.995), got {c.decay}"
    if not 0 <= c.warmup < 1:
        return f"ema.warmup must be in [0, 1) (a fraction of the run's steps, e.g. 0.025), got {c.warmup}"
    return ""


@register_addon("ema", EMAConfig, check_ema)
def build_ema(cfg: EMAConfig, state):
    """EMA over the run's module when ``ema.enabled``."""
    if not cfg.enabled:
        return None
    steps = state.parts.updates_per_epoch
    return EMA(cfg, state.raw_model, state.cfg.optim.epochs * steps, steps, state.optimizer,
               master_partitions(state.accelerator, state.optimizer))
