"""TRADES (Zhang et al. 2019): clean cross-entropy + beta * KL(clean || adversarial)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..attacks import attack_mode, kl_loss
from .base import Batch, StepOutput, Strategy


class TRADES(Strategy):
    """loss = CE_ls(f(x), y) + beta * mean_i KL(p(x_i) || p(x_adv_i)), where the attack maximises
    the same KL from p(x) (soft labels of a forward in the attack's BatchNorm mode, the threat's
    ``bn_mode``) and CE_ls is cross-entropy with label smoothing ``label_smoothing`` (DM-AT: 0.1).

    ``start``: 'uniform' (our attack's start in the ball, the default) or 'normal', the
    reference code's 0.001 * N(0, 1) (Zhang et al. 2019; DM-Improves-AT keeps it).
    """

    def __init__(self, attack, beta: float = 6.0, label_smoothing: float = 0.0,
                 start: str = "uniform"):
        if attack.loss != "ce" or attack.targeted:
            raise ValueError("TRADES sets its own attack objective (KL); use loss=ce, untargeted")
        if start not in ("uniform", "normal"):
            raise ValueError(f"TRADES start must be 'uniform' or 'normal', got '{start}'")
        self.attack = dataclasses.replace(attack, loss=kl_loss,
                                          start_sigma=0.001 if start == "normal" else 0.0)
        self.beta, self.label_smoothing = beta, label_smoothing

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
        natural = F.cross_entropy(logits_clean, batch.y, label_smoothing=self.label_smoothing)
        loss = natural + self.beta * robust
        return StepOutput(loss, logits_adv, adversarial=True)
