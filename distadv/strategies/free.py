"""Free adversarial training (Shafahi et al. 2019, "Adversarial Training for Free!"): every batch
is trained on m times in a row (``strategy.free_replays``), and the one backward of each
replay gives both the weight gradient and the input gradient that moves the perturbation:

    for each of the m replays of batch (x, y):
        x_adv = clamp(x + delta, 0, 1)            (x_adv requires grad: the step's backward
        loss = CE(f(x_adv), y); backward; step     fills x_adv.grad at no extra pass)
        delta = P_eps(delta + step eps sign(x_adv.grad))

So a replay costs 1 forward + 1 backward, like natural training, and the robustness comes
from the perturbation carried over the replays (and on to the next batch of the same shape, as
in the reference code). Divide the epochs by m for the paper's budget: the loop makes
m optimizer steps per batch and the schedule counts them (``replays_per_batch``).

Differences from the reference code, on purpose: delta restarts at 0 at every epoch start
(one batch of warm-up per epoch, and no tensor state to checkpoint: a resumed run, on any number
of ranks, replays exactly); a batch of another shape (the last) starts from 0.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..attacks.threat import get_norm
from .base import Batch, StepOutput, Strategy, cross_entropy_step

STEP_FACTOR = 0.8   # the step after each rollback


class Free(Strategy):
    """Free-AT with ``replays`` replays per batch and a perturbation step of ``step`` x eps."""

    name = "free"

    def __init__(self, attack, replays: int, step: Optional[float] = None):
        if replays < 1:
            raise ValueError(f"free needs replays >= 1, got {replays}")
        self.attack, self.replays = attack, int(replays)   # eps, norm (the warm-up scales eps)
        self.step = 1.0 if step is None else float(step)
        self._norm = get_norm(attack.norm)
        self.delta: Optional[torch.Tensor] = None
        self._inputs: Optional[torch.Tensor] = None
        self.updates = 0     # perturbation updates made (tests count them)

    def own_attacks(self) -> list:
        return [self.attack]

    def on_epoch_start(self, state, epoch: int) -> None:
        self.delta = None

    def examples(self, attack_model, x, y):
        if self.delta is None or self.delta.shape != x.shape:
            self.delta = torch.zeros_like(x, dtype=torch.float32)
        x_adv = (x.float() + self.delta).clamp(0.0, 1.0).requires_grad_(True)
        self._inputs = x_adv
        return Batch(x, y, x_adv, self)

    def loss(self, model, batch: Batch) -> StepOutput:
        return cross_entropy_step(model, batch, adversarial=True)

    def after_backward(self, state) -> None:
        """The perturbation's step, from the input gradient the weights' backward left."""
        if self._inputs is None:          # a natural batch of a mix
            return
        grad, self._inputs = self._inputs.grad, None
        if grad is None:
            return
        eps = self.attack.eps
        with torch.no_grad():
            self.delta = self._norm.project(self.delta + self._norm.step(grad.float(),
                                                                         self.step * eps), eps)
        self.updates += 1

    def tighten(self) -> str:
        old, self.step = self.step, self.step * STEP_FACTOR
        return f"free step {old:.3g} -> {self.step:.3g} eps"

    def state_dict(self) -> Dict:
        return {"step": self.step}

    def load_state_dict(self, state: Dict) -> None:
        self.step = float(state["step"])
        self.delta = None      # a rollback or a resume: the carried perturbation restarts at 0
