"""Single-step adversarial training: FGSM-RS (Wong et al. 2020) and N-FGSM (de Jorge et al. 2022).

Both make the training example with one gradient step, so a batch costs 2 forward/backward
passes instead of PGD-K's K + 1. With ``eps`` the threat's radius (after the eps warm-up):

    FGSM-RS   delta_0 ~ U[-eps, eps]        delta = P_eps(delta_0 + 1.25 eps sign(g))
              ||delta||_inf <= eps           (projected back onto the ball)
    N-FGSM    delta_0 ~ U[-k eps, k eps]    delta = delta_0 + eps sign(g),  k = 2
              ||delta||_inf <= (k + 1) eps   (no projection: 3 eps by default, NOT eps)

then x + delta is clamped to [0, 1]; g is the input gradient of the loss at x + delta_0.
``strategy.step`` and ``strategy.noise`` set the step and the start's radius in units of eps
(null: the method's default above). A noise of 0 is FGSM without a random start, the variant
that overfits catastrophically first. Both are ``Adversarial`` with a one-step PGD
(``attacks/pgd.py``: ``start_scale``, ``project``); what they add is the step rule and
``tighten`` (after the guard's rollback: FGSM-RS without a random start gets one, Wong et al.'s
fix for plain FGSM's collapse, then lowers its step x0.8; N-FGSM raises its noise by 1 eps),
whose result is checkpointed.
"""
from __future__ import annotations

import dataclasses
from typing import Dict

from .base import Adversarial

STEP_FACTOR = 0.8   # FGSM-RS's step after each rollback (Wong et al.: CO appears above 1.25 eps)
NOISE_RAISE = 1.0   # N-FGSM's noise after each rollback, in eps (de Jorge et al.: more noise, no CO)


class SingleStep(Adversarial):
    """One gradient step of ``step`` x eps from a uniform start of radius ``noise`` x eps;
    ``project``: clip the result onto the eps ball (FGSM-RS) or not (N-FGSM)."""

    def __init__(self, attack, name: str, step: float, noise: float, project: bool):
        if step <= 0 or noise < 0:
            raise ValueError(f"{name} needs step > 0 and noise >= 0, got {step}, {noise}")
        super().__init__(dataclasses.replace(attack, steps=1, random_start=noise > 0,
                                             project=project, restarts=1))
        self.name, self.step, self.noise = name, float(step), float(noise)

    def examples(self, attack_model, x, y):
        # eps is the warm-up's current radius; step and noise follow it (and tighten's changes)
        self.attack.alpha = self.step * self.attack.eps
        self.attack.start_scale = self.noise
        self.attack.random_start = self.noise > 0
        return super().examples(attack_model, x, y)

    def bound(self) -> float:
        """The largest L-inf perturbation, in units of eps: 1 projected, else noise + step."""
        return 1.0 if self.attack.project else self.noise + self.step

    def tighten(self) -> str:
        if self.attack.project and self.noise == 0:   # FGSM without a start: Wong et al.'s fix
            self.noise = 1.0
            return f"{self.name} random start 0 -> 1 eps"
        if self.attack.project:     # FGSM-RS: a smaller step
            old, self.step = self.step, self.step * STEP_FACTOR
            return f"{self.name} step {old:.3g} -> {self.step:.3g} eps"
        old, self.noise = self.noise, self.noise + NOISE_RAISE   # N-FGSM: more noise
        return f"{self.name} noise {old:.3g} -> {self.noise:.3g} eps"

    def state_dict(self) -> Dict:
        return {"step": self.step, "noise": self.noise}

    def load_state_dict(self, state: Dict) -> None:
        self.step, self.noise = float(state["step"]), float(state["noise"])


def fgsm_rs(attack, step=None, noise=None) -> SingleStep:
    """FGSM with a random start (Wong et al. 2020, "Fast is better than free"): step 1.25 eps."""
    return SingleStep(attack, "fgsm_rs", 1.25 if step is None else step,
                      1.0 if noise is None else noise, project=True)


def n_fgsm(attack, step=None, noise=None) -> SingleStep:
    """N-FGSM (de Jorge et al. 2022, "Make some noise"): noise 2 eps, step eps, no clipping."""
    return SingleStep(attack, "n_fgsm", 1.0 if step is None else step,
                      2.0 if noise is None else noise, project=False)
