"""Mixed adversarial training over several threats (Araujo et al. 2020, MAT-Rand / MAT-Max)."""
from __future__ import annotations

import torch

from ..attacks import attack_mode, ce_loss
from .base import Adversarial, Batch, Strategy, cross_entropy_step


class MAT(Strategy):
    """``mode='rand'``: each batch is attacked with one threat drawn uniformly (MAT-Rand, the
    seed's choice; costs one attack). ``mode='max'``: every threat runs and each example keeps
    the one with the higher loss (MAT-Max; costs one attack per threat plus one forward each)."""

    def __init__(self, attacks, mode: str = "rand"):
        if mode not in ("rand", "max"):
            raise ValueError(f"MAT mode must be 'rand' or 'max', got '{mode}'")
        self.attacks, self.mode = list(attacks), mode
        self._single = [Adversarial(a) for a in self.attacks]

    def children(self) -> list:
        return self._single

    def examples(self, attack_model, x, y):
        if self.mode == "rand":
            pick = self._single[int(torch.randint(len(self._single), ()))]
            return pick.examples(attack_model, x, y)
        best_x, best_loss = None, None
        for attack in self.attacks:
            x_adv = attack(attack_model, x, attack.labels_for(y, self.num_classes))
            with torch.no_grad(), attack_mode(attack_model, attack.bn_mode):
                loss = ce_loss(attack_model(x_adv), y)
            if best_x is None:
                best_x, best_loss = x_adv, loss
            else:
                better = loss > best_loss
                best_x = torch.where(better.view(-1, 1, 1, 1), x_adv, best_x)
                best_loss = torch.maximum(loss, best_loss)
        return Batch(x, y, best_x, self)

    def own_attacks(self) -> list:
        return self.attacks

    def loss(self, model, batch):
        return cross_entropy_step(model, batch, adversarial=True)
