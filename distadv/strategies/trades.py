"""TRADES (Zhang et al. 2019): clean cross-entropy + beta * KL(clean || adversarial)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..attacks import attack_mode, kl_loss
from .base import StepOutput, Strategy


class TRADES(Strategy):
    """The attack maximises KL(p_clean || p_adv) (soft labels from an eval-mode forward).

    Differences from the reference code, on purpose: the random start is our attack's
    (uniform in the ball, instead of 0.001 * N(0, 1)), and everything else follows the paper.
    """

    def __init__(self, attack, beta: float = 6.0):
        if attack.loss != "ce" or attack.targeted:
            raise ValueError("TRADES sets its own attack objective (KL); use loss=ce, untargeted")
        self.attack, self.beta = dataclasses.replace(attack, loss=kl_loss), beta

    def __call__(self, model, attack_model, x, y):
        with torch.no_grad(), attack_mode(attack_model, self.attack.bn_mode):
            p_clean = F.softmax(attack_model(x).float(), dim=1)
        x_adv = self.attack(attack_model, x, p_clean)
        logits_clean = model(x)
        logits_adv = model(x_adv)
        robust = kl_loss(logits_adv, F.softmax(logits_clean.float(), dim=1)).mean()
        loss = F.cross_entropy(logits_clean, y) + self.beta * robust
        return StepOutput(loss, logits_adv, adversarial=True)
