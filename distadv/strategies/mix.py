"""A natural/adversarial batch mix (the seed's Table 6: 5% natural batches)."""
from __future__ import annotations

import torch

from .base import Natural, Strategy


class Mix(Strategy):
    """With probability ``natural_fraction`` a batch is trained clean, otherwise by ``inner``.

    Whole batches, not examples (the seed's choice: a natural batch skips the attack, so it
    also saves its cost). The draw uses the global RNG, reseeded per (seed, epoch, rank).
    """

    def __init__(self, inner: Strategy, natural_fraction: float):
        if not 0.0 <= natural_fraction < 1.0:
            raise ValueError(f"natural_fraction must be in [0, 1), got {natural_fraction}")
        self.inner, self.natural, self.fraction = inner, Natural(), natural_fraction

    def children(self) -> list:
        return [self.inner, self.natural]

    def examples(self, attack_model, x, y):
        if float(torch.rand(())) < self.fraction:
            return self.natural.examples(attack_model, x, y)
        return self.inner.examples(attack_model, x, y)
