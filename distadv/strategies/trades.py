"""TRADES (Zhang et al. 2019): clean cross-entropy + beta * KL(clean || adversarial)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..attacks import attack_mode, kl_loss
from .base import Batch, StepOutput, Strategy


class TRADES(Strategy):
    """The attack maximises KL(p_clean || p_adv) (soft labels from an eval-mode forward).

    Differences from the reference code, on purpose: the random start is our attack's
    (uniform in the ball, instead of 0.001 * N(0, 1)), and everything else follows the paper.
    """

    def __init__(self, attack, beta: float = 6.0):
        if attack.loss != "ce" or attack.targeted:
            raise ValueError("TRADES sets its own attack objective (KL); use loss=ce, untargeted")
        self.attack, self.beta = dataclasses.replace(attack, loss=kl_loss), beta

    def own_attacks(self) -> list:
        return [self.attack]

    def examples(self, attack_model, x, y):
        with torch.no_grad(), attack_mode(attack_model, self.attack.bn_mode):
            p_clean = F.softmax(attack_model(x).float(), dim=1)
        return Batch(x, y, self.attack(attack_model, x, p_clean), self)

    def loss(self, model, batch):
        logits_clean = model(batch.x)
        logits_adv = model(batch.inputs)
        robust = kl_loss(logits_adv, F.softmax(logits_clean.float(), dim=1)).mean()
        loss = F.cross_entropy(logits_clean, batch.y) + self.beta * robust
        return StepOutput(loss, logits_adv, adversarial=True)
