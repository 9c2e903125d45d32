"""The strategy interface: a batch in, a loss plus the logits it was computed from out."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class StepOutput:
    """What the loop needs from a strategy: the loss to minimise and the logits on the
    training input (adversarial for adversarial strategies) for train accuracy."""

    loss: torch.Tensor
    logits: torch.Tensor
    adversarial: bool


class Strategy:
    """Turns (x, y) into a StepOutput. The loop does not know which strategy runs.

    ``model`` is the prepared (DDP/DeepSpeed-wrapped) model, in train mode, used for the one
    forward/backward that updates the weights. ``attack_model`` is the same module unwrapped:
    attacks run on it so that K attack steps cause no gradient synchronisation.
    """

    num_classes: int = 10

    def children(self) -> list:
        """Strategies this one delegates to (``build_strategy`` sets num_classes on all)."""
        return []

    def __call__(self, model: nn.Module, attack_model: nn.Module, x: torch.Tensor,
                 y: torch.Tensor) -> StepOutput:
        raise NotImplementedError


class Natural(Strategy):
    """Standard training on clean images."""

    def __call__(self, model, attack_model, x, y):
        logits = model(x)
        return StepOutput(F.cross_entropy(logits, y), logits, adversarial=False)


class Adversarial(Strategy):
    """Madry et al. 2017: train on the attack's examples (PGD-L-inf, PGD-L2, FGSM, ...)."""

    def __init__(self, attack):
        self.attack = attack

    def __call__(self, model, attack_model, x, y):
        x_adv = self.attack(attack_model, x, self.attack.labels_for(y, self.num_classes))
        logits = model(x_adv)
        return StepOutput(F.cross_entropy(logits, y), logits, adversarial=True)
