"""The guard's collapse rule and the best accuracies it compares against (one per signal)."""
from __future__ import annotations

from typing import Dict


def collapsed(pgd: float, fgsm: float, best: float, fgsm_at_best: float, threshold: float) -> bool:
    """Catastrophic overfitting: PGD accuracy fell more than ``threshold`` from its best while
    FGSM accuracy fell less than ``threshold`` from its value at that best."""
    return best - pgd > threshold and fgsm_at_best - fgsm < threshold


class Signal:
    """The best PGD accuracy of one signal (probe or validation) and FGSM's at that point."""

    def __init__(self, name: str):
        self.name, self.best, self.fgsm_at_best = name, -1.0, 0.0

    def collapsed(self, pgd: float, fgsm: float, threshold: float) -> bool:
        """Whether (pgd, fgsm) is a collapse from this signal's best."""
        return self.best >= 0 and collapsed(pgd, fgsm, self.best, self.fgsm_at_best, threshold)

    def update(self, pgd: float, fgsm: float) -> None:
        """Record a check that did not collapse."""
        if pgd > self.best:
            self.best, self.fgsm_at_best = pgd, fgsm

    def state_dict(self) -> Dict:
        return {"best": self.best, "fgsm_at_best": self.fgsm_at_best}

    def load_state_dict(self, state: Dict) -> None:
        self.best, self.fgsm_at_best = float(state["best"]), float(state["fgsm_at_best"])
