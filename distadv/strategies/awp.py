"""AWP: adversarial weight perturbation (Wu et al. 2020, "Adversarial Weight Perturbation Helps
Robust Generalization", csdongxian/AWP), for PGD-AT, TRADES or any strategy of the run.

Each step, once the batch's adversarial examples exist: a proxy copy of the model takes one SGD
step *up* the strategy's own loss on that batch; the difference d_l of every weight matrix l
(convolutions and linear layers, not BatchNorm or biases) is rescaled to the layer's norm, and
the model's weights move by

    v_l = gamma * ||w_l|| / (||d_l|| + 1e-20) * d_l        so ||v_l|| <= gamma * ||w_l||

The loss is then computed and backpropagated at w + v; after backward the weights are put back
*exactly* (copied from a saved copy, not subtracted: w + v - v is not w in floating point), so
the optimizer applies the gradient taken at w + v to the unperturbed w.

Cost per step: one forward/backward of the proxy (no communication: it is a plain module) and
copies of the weight matrices; about +10 % next to a 10-step attack (BENCHMARKS.md). Under DDP
each rank perturbs with its own shard of the batch (like BatchNorm's statistics); the gradient
all-reduce stays the step's only collective.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch
from torch import nn

from ..engine.side_copy import side_copy
from ..errors import ConfigError
from .addons import register_addon
from .base import Batch, Method

_EPS = 1e-20   # Wu et al.'s guard against a zero difference


@dataclass
class AWPConfig:
    """``awp.*``: adversarial weight perturbation (off by default)."""

    enabled: bool = False       # perturb the weights adversarially before each step
    gamma: float = 0.005        # per-layer size relative to the weight norm (Wu et al.: TRADES
                                # 0.005, PGD-AT 0.01)
    warmup_epochs: int = 0      # plain epochs before AWP starts (Wu et al.'s TRADES-AWP: 10)
    proxy_lr: float = 0.01      # the proxy's SGD step (Wu et al.: 0.01)


def perturbed_weights(module: nn.Module) -> List[str]:
    """Names of the parameters AWP perturbs: weight matrices/kernels (dim > 1)."""
    return [n for n, p in module.named_parameters() if p.dim() > 1 and "weight" in n]


class AWP(Method):
    """Perturbs ``module``'s weight matrices in ``before_loss`` and restores them bit for bit in
    ``after_backward``. Stateless across steps: the proxy is reloaded from the model each step
    and its optimizer (plain SGD, no momentum) keeps nothing."""

    name = "awp"

    def __init__(self, cfg: AWPConfig, module: nn.Module):
        self.gamma, self.warmup = float(cfg.gamma), int(cfg.warmup_epochs)
        self.module = module
        self.proxy = side_copy(module)
        names = set(perturbed_weights(module))
        self._weights = [p for n, p in module.named_parameters() if n in names]
        self._proxy_weights = [p for n, p in self.proxy.named_parameters() if n in names]
        self._proxy_opt = torch.optim.SGD(self.proxy.parameters(), lr=float(cfg.proxy_lr))
        self._all = [*module.parameters(), *module.buffers()]
        self._proxy_all = [*self.proxy.parameters(), *self.proxy.buffers()]
        self.active = False
        self._saved: List[torch.Tensor] = []
        self.record = False                 # keep ||v_l|| / ||w_l|| of each step (tests)
        self.last_ratio: List[float] = []

    def on_epoch_start(self, state, epoch: int) -> None:
        self.active = epoch >= self.warmup

    def before_loss(self, state, batch: Batch) -> None:
        if not self.active:
            return
        with torch.no_grad():   # one fused copy of every parameter and buffer
            torch._foreach_copy_(self._proxy_all, self._all)
        self.proxy.train()
        loss = batch.owner.loss(self.proxy, batch).loss
        self._proxy_opt.zero_grad(set_to_none=True)
        (-loss).backward()              # one step *up* the loss
        self._proxy_opt.step()
        with torch.no_grad():
            self._saved = [w.detach().clone() for w in self._weights]
            diffs = torch._foreach_sub(self._proxy_weights, self._weights)
            w_norms = torch._foreach_norm(self._weights)
            d_norms = torch._foreach_norm(diffs)
            scales = [self.gamma * wn / (dn + _EPS) for wn, dn in zip(w_norms, d_norms)]
            steps = torch._foreach_mul(diffs, scales)
            if self.record:   # off in runs: .item() per layer would sync a GPU
                self.last_ratio = [(s.norm() / wn).item() if wn > 0 else 0.0
                                   for s, wn in zip(steps, w_norms)]
            torch._foreach_add_(self._weights, steps)

    def after_backward(self, state) -> None:
        if self._saved:
            with torch.no_grad():
                torch._foreach_copy_(self._weights, self._saved)
            self._saved = []


def check_awp(c: AWPConfig, cfg) -> str:
    """One line naming the first invalid ``awp.*`` value, or ''."""
    if c.enabled and cfg.strategy.name == "natural":
        return "awp.enabled=true needs an adversarial strategy (adversarial or trades), not natural"
    if not c.gamma > 0:
        return f"awp.gamma must be > 0 (e.g. 0.005 for TRADES, 0.01 for PGD-AT), got {c.gamma}"
    if c.warmup_epochs < 0:
        return f"awp.warmup_epochs must be >= 0, got {c.warmup_epochs}"
    if not c.proxy_lr > 0:
        return f"awp.proxy_lr must be > 0 (e.g. 0.01), got {c.proxy_lr}"
    return ""


@register_addon("awp", AWPConfig, check_awp)
def build_awp(cfg: AWPConfig, state):
    """AWP over the run's module when ``awp.enabled``."""
    if not cfg.enabled:
        return None
    if any(p.dtype != torch.float32 for p in state.raw_model.parameters()):
        raise ConfigError("awp.enabled=true needs fp32 weights in the module (DeepSpeed casts "
                          "them to bf16/fp16); use runtime.precision=fp32 under DeepSpeed, or DDP")
    return AWP(cfg, state.raw_model)
