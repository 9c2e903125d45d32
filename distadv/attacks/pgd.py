"""Projected gradient descent, written once over the norm steps of ``threat.py``.

FGSM is PGD with one step of size eps and no random start.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch import nn

from .losses import LOSSES
from .mode import attack_mode
from .threat import get_norm

LossFn = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


@dataclass
class PGD:
    """PGD attack in pixel space (Madry et al. 2017); FGSM when ``steps=1, random_start=False``.

    Paper: "Towards Deep Learning Models Resistant to Adversarial Attacks", arXiv:1706.06083.
    Norm: 'linf' or 'l2' (per-example ball of radius ``eps`` around x, then the [0, 1] box).

    Arguments:
        norm: 'linf' or 'l2'.  eps: radius.  alpha: step size.  steps: iterations (>= 1).
        random_start: start from a random point of the ball.
        restarts: independent runs; the worst case per example is kept (misclassified first,
            then the higher loss).
        loss: 'ce', 'cw', or a callable ``(logits, y, targeted) -> (B,)`` to maximise.
        targeted: if True, ``y`` holds target labels and the attack moves towards them.
        bn_mode: model mode during the attack ('eval' or 'train'); restored afterwards.
        start_sigma: if > 0, the random start is ``start_sigma * N(0, 1)`` (projected) instead
            of uniform in the ball: the TRADES reference code's 0.001 * N(0, 1).
        eot_samples: Expectation over Transformation (Athalye et al. 2018): each step follows
            the sum of the gradients of this many forward passes, so a randomised model
            (input noise, PNI) is attacked in expectation. Costs eot_samples x per step.
        start_scale: the uniform random start's radius in units of eps (N-FGSM: 2).
        project: project onto the eps ball after each step; False leaves the step unclipped
            (N-FGSM: its perturbation reaches (start_scale + alpha / eps) * eps, not eps).

    Shapes: x (B, C, H, W) float in [0, 1]; y (B,) long (or (B, K) soft labels for custom
    losses). Returns x_adv with x's shape, fp32, detached.

    Gradients are taken with ``torch.autograd.grad`` on the input only: no weight gradients are
    computed, no ``.grad`` is touched and, on an unwrapped DDP module, no all-reduce is issued.
    The perturbation arithmetic stays fp32 even when the forward runs under autocast.

    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    >>> x_adv = PGD(norm="linf", eps=0.1, alpha=0.05, steps=3)(model, x, y)
    >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
    True
    """

    norm: str = "linf"
    eps: float = 0.03
    alpha: float = 0.0075
    steps: int = 10
    random_start: bool = True
    restarts: int = 1
    loss: Union[str, LossFn] = "ce"
    targeted: bool = False
    bn_mode: str = "eval"
    eot_samples: int = 1
    start_sigma: float = 0.0
    start_scale: float = 1.0
    project: bool = True

    def __post_init__(self):
        self._norm = get_norm(self.norm)
        self._loss: LossFn = LOSSES[self.loss] if isinstance(self.loss, str) else self.loss
        if (self.eps <= 0 or self.alpha <= 0 or self.steps < 1 or self.restarts < 1
                or self.eot_samples < 1):
            raise ValueError("PGD needs eps > 0, alpha > 0, steps >= 1, restarts >= 1, "
                             f"eot_samples >= 1; got {self}")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return adversarial examples for ``x`` (see the class docstring)."""
        x = x.detach().float()
        # enable_grad: callers often evaluate under no_grad; the input gradient is still needed.
        with attack_mode(model, self.bn_mode), torch.enable_grad():
            if self.restarts == 1:  # the common case skips the selection forward (one pass saved)
                return self._run(model, x, y)
            best, best_fooled, best_loss = None, None, None
            for _ in range(self.restarts):
                x_adv = self._run(model, x, y)
                fooled, loss = self._score(model, x_adv, y)
                if best is None:
                    best, best_fooled, best_loss = x_adv, fooled, loss
                    continue
                better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
                best = torch.where(better.view(-1, 1, 1, 1), x_adv, best)
                best_fooled, best_loss = best_fooled | fooled, torch.where(better, loss, best_loss)
            return best

    def labels_for(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The labels to pass to ``__call__``: ``y`` itself, or random other classes if targeted."""
        if not self.targeted:
            return y
        shift = torch.randint(1, num_classes, y.shape, device=y.device)
        return (y + shift) % num_classes

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        norm, eps = self._norm, self.eps
        if not self.random_start or self.start_scale == 0:
            delta = torch.zeros_like(x)
        elif self.start_sigma > 0:
            delta = norm.project(self.start_sigma * torch.randn_like(x), eps)
        else:
            delta = norm.init(x, eps * self.start_scale)
        x_adv = torch.clamp(x + delta, 0.0, 1.0)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            grad = 0
            for _ in range(self.eot_samples):   # a fresh random forward each time (EOT)
                objective = self._loss(model(x_adv), y, self.targeted).sum()
                grad = grad + torch.autograd.grad(objective, x_adv)[0]
            # fp32: grad w.r.t. an fp32 leaf is fp32 even under autocast; cast defensively.
            step = norm.step(grad.detach().float(), self.alpha)
            delta = x_adv.detach() + step - x
            if self.project:
                delta = norm.project(delta, eps)
            x_adv = torch.clamp(x + delta, 0.0, 1.0)
        return x_adv.detach()

    @torch.no_grad()
    def _score(self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor):
        logits = model(x_adv)
        # Soft labels (TRADES) have no class to hit: the mask lives on the logits' device, or
        # the restart selection below mixes CPU and CUDA tensors (issue 16).
        hit = (logits.argmax(1) == y if y.dim() == 1
               else torch.zeros(len(y), dtype=torch.bool, device=logits.device))
        fooled = hit if self.targeted else ~hit
        return fooled, self._loss(logits, y, self.targeted)


def fgsm(eps: float, **kw) -> PGD:
    """FGSM (Goodfellow et al. 2015): one L-inf step of size eps, no random start."""
    return PGD(norm="linf", eps=eps, alpha=eps, steps=1, random_start=False, **kw)


def build_attack(cfg, loss: Optional[Union[str, LossFn]] = None) -> PGD:
    """Build a PGD from a ``ThreatConfig`` (see ``distadv.config``)."""
    return PGD(norm=cfg.norm, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
               random_start=cfg.random_start, restarts=cfg.restarts,
               loss=loss if loss is not None else cfg.loss, targeted=cfg.targeted,
               bn_mode=cfg.bn_mode, eot_samples=cfg.eot_samples)
