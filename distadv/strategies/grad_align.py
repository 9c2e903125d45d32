"""GradAlign (Andriushchenko & Flammarion 2020, "Understanding and Improving Fast Adversarial
Training", tml-epfl/understanding-fast-adv-training): FGSM training plus a penalty on the
misalignment of the input gradients at x and at a random point of the ball.

    loss = CE(f(x_fgsm), y) + lambda * (1 - mean_i cos(g1_i, g2_i))
    g1 = d CE(f(x), y) / dx            (a constant: no graph)
    g2 = d CE(f(x + eta), y) / dx      eta ~ U[-eps, eps] (x + eta clamped to [0, 1]), with
                                       its graph (double backprop)

The mean runs over the examples whose two gradients are both non-zero (the reference code's
rule: a zero gradient has no direction). CE is the batch mean, as in the reference code; the
cosine does not depend on the scale. The FGSM example is the one-step rule of ``fast.py``
(``strategy.step`` default 1 eps, ``strategy.noise`` default 0: the paper's FGSM + GradAlign).

Cost per batch, in passes of the model (F forward, B backward): the FGSM example 1F + 1B, g1
1F + 1B, g2 1F + 1B (building its graph), the loss 1F, and one backward through the loss and
through g2's graph (a double backward, ~2B): 4 forwards and 5 backwards' worth against FGSM's
2F + 2B (the paper: about 3x FGSM; BENCHMARKS.md has the measured ratio). All three extra
forwards run through the training model in train mode, as in the reference code.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from .base import Batch, StepOutput
from .fast import SingleStep

LAMBDA_FACTOR = 2.0   # the penalty's weight after each rollback


def input_gradient(model, x: torch.Tensor, y: torch.Tensor, graph: bool) -> torch.Tensor:
    """d mean CE(model(x), y) / dx; ``graph``: keep it differentiable (double backprop)."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    return torch.autograd.grad(loss, x, create_graph=graph)[0]


def alignment_penalty(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """1 - the mean cosine of the per-example gradients, over the examples where neither is 0."""
    g1, g2 = g1.flatten(1), g2.flatten(1)
    keep = (g1.norm(dim=1) > 0) & (g2.norm(dim=1) > 0)
    if not keep.any():
        return g2.sum() * 0.0          # keeps the graph; nothing to align
    g1, g2 = g1[keep], g2[keep]
    cos = (g1 * g2).sum(1) / (g1.norm(dim=1) * g2.norm(dim=1))
    return 1.0 - cos.mean()


class GradAlign(SingleStep):
    """FGSM training (``SingleStep``) plus ``lam`` x the gradient-alignment penalty."""

    def __init__(self, attack, lam: float, step=None, noise=None):
        if lam < 0:
            raise ValueError(f"grad_align's lambda must be >= 0, got {lam}")
        super().__init__(attack, "grad_align", 1.0 if step is None else step,
                         0.0 if noise is None else noise, project=True)
        self.lam = float(lam)
        self.last_penalty = None     # the step's penalty (before lambda), for tests and logs

    def loss(self, model, batch: Batch) -> StepOutput:
        logits = model(batch.inputs)
        ce = F.cross_entropy(logits, batch.y)
        if self.lam == 0:
            return StepOutput(ce, logits, adversarial=True)
        eps = self.attack.eps
        g1 = input_gradient(model, batch.x, batch.y, graph=False)
        eta = torch.empty_like(batch.x).uniform_(-eps, eps)
        g2 = input_gradient(model, (batch.x + eta).clamp(0, 1), batch.y, graph=True)
        penalty = alignment_penalty(g1, g2)
        self.last_penalty = penalty.detach()
        return StepOutput(ce + self.lam * penalty, logits, adversarial=True)

    def tighten(self) -> str:
        old, self.lam = self.lam, self.lam * LAMBDA_FACTOR
        return f"grad_align lambda {old:.3g} -> {self.lam:.3g}"

    def state_dict(self) -> Dict:
        return {**super().state_dict(), "lam": self.lam}

    def load_state_dict(self, state: Dict) -> None:
        super().load_state_dict(state)
        self.lam = float(state["lam"])
