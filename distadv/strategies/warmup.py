"""The training-eps warm-up, as an epoch-start hook of the run's method."""
from __future__ import annotations

from typing import List

from .base import Method


def eps_scale(warmup_epochs: int, epoch: int) -> float:
    """Training-eps multiplier for ``epoch`` (0-based): (epoch + 1) / N during a warm-up of N
    epochs, then 1. Starting small keeps adversarial training from collapsing to a constant
    classifier, which a strong attack on a random net can cause (seen on digits at eps 0.2)."""
    n = warmup_epochs
    return 1.0 if n <= 0 else min(1.0, (epoch + 1) / n)


class EpsWarmup(Method):
    """Sets every training attack's eps and alpha to its configured value times
    ``eps_scale(epochs, epoch)`` at each epoch start (``strategy.eps_warmup_epochs``). No state
    of its own: the scale is a function of the epoch, so a resumed run gets the same radii."""

    name = "eps_warmup"

    def __init__(self, attacks: List, epochs: int):
        self.epochs = epochs
        self._base = [(a, a.eps, a.alpha) for a in attacks]

    def apply(self, epoch: int) -> None:
        """Scale the attacks for ``epoch`` (0-based)."""
        scale = eps_scale(self.epochs, epoch)
        for attack, eps, alpha in self._base:
            attack.eps, attack.alpha = eps * scale, alpha * scale

    def on_epoch_start(self, state, epoch: int) -> None:
        self.apply(epoch)
