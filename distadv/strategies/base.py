"""The training-method protocol (hooks around one optimizer step, checkpointed state) and the
strategy interface (a batch in, a loss plus the logits it was computed from out).

One run has one method, built once (``distadv.strategies.build_method``): a strategy tree (the
batch loss: natural, adversarial, MAT, TRADES, a natural-batch mix, AWP around any of them) and
add-ons (the eps warm-up, EMA). The loop calls every hook of every node, in this order per step:

    batch = strategy.examples(attack_model, x, y)      # the attack; no communication
    before_loss(state, batch)                          # AWP perturbs the weights here
    out = batch.owner.loss(model, batch)               # the one forward through the wrapper
    backward -> after_backward(state) -> clip + optimizer step -> after_step(state)

(Free-AT gets every batch m times in a row: ``replays_per_batch``), and
``on_epoch_start(state, epoch)`` / ``after_validation(state, metrics)`` /
``on_epoch_end(state, metrics)`` around each epoch. A hook may set ``state.halt`` to end the
epoch after the current step (every rank must decide alike: reduce what the decision reads).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

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


@dataclass
class Batch:
    """A training batch once its examples are made: the clean ``x``, labels ``y``, the inputs
    the weights are trained on, and ``owner``, the strategy whose ``loss`` applies (a mix or
    MAT-Rand hands the batch to the strategy it picked). AWP runs ``owner.loss`` twice: on
    its proxy, then on the perturbed model."""

    x: torch.Tensor
    y: torch.Tensor
    inputs: torch.Tensor
    owner: "Strategy"
    extra: Dict[str, Any] = field(default_factory=dict)


class Method:
    """Hooks a training method may implement; every default does nothing.

    ``state`` is the run's ``TrainState`` (``distadv.engine.state``): config, accelerator,
    model handles, optimizer, schedule, epoch. ``state_dict`` goes into the ``latest``
    checkpoint under the method's ``name`` (only when not empty), and ``load_state_dict`` gets
    it back on resume, so a method's state survives preemption bit for bit.
    """

    name: str = ""

    def children(self) -> List["Method"]:
        """Methods this one delegates to (hooks and ``num_classes`` reach them too)."""
        return []

    def on_epoch_start(self, state, epoch: int) -> None:
        """Before the first step of ``epoch`` (0-based)."""

    def before_loss(self, state, batch: "Batch") -> None:
        """After the batch's examples are made, before the loss that is backpropagated."""

    def after_backward(self, state) -> None:
        """After the gradients exist, before clipping and the optimizer step."""

    def after_step(self, state) -> None:
        """After the optimizer (and schedule) step."""

    def after_validation(self, state, metrics: Dict[str, float]) -> bool:
        """After validation, before early stopping sees ``metrics`` (the epoch's train/ and
        val/ numbers, to which a method may add its own). True: the method replaced the
        weights (a rollback), so the loop validates again before selecting."""
        return False

    def on_epoch_end(self, state, metrics: Dict[str, float]) -> None:
        """After validation; ``metrics`` holds the epoch's train/ and val/ numbers."""

    def notes(self) -> List[str]:
        """Lines to keep in the run's TensorBoard text since the last call (the guard's)."""
        return []

    def progress(self) -> Dict[str, Any]:
        """Plain data for progress.json and results.json, by section name (the guard's)."""
        return {}

    def eval_model(self, state) -> Optional[nn.Module]:
        """The model to validate, select and test, if not the trained one (EMA's average)."""
        return None

    def state_dict(self) -> Dict[str, Any]:
        """Tensors and numbers only (checkpoints load with ``weights_only=True``)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class Strategy(Method):
    """Turns (x, y) into a StepOutput. The loop does not know which strategy runs.

    ``model`` is the prepared (DDP/DeepSpeed-wrapped) model, in train mode, used for the one
    forward/backward that updates the weights. ``attack_model`` is the same module unwrapped:
    attacks run on it so that K attack steps cause no gradient synchronisation.
    """

    num_classes: int = 10

    def tighten(self) -> str:
        """Make the method less prone to catastrophic overfitting after a rollback (a smaller
        step, more noise, a stronger penalty: each fast method defines it); returns what
        changed as a phrase, or '' if the method has nothing to change."""
        return ""

    def own_attacks(self) -> list:
        """The attack objects this strategy itself runs (the eps warm-up rescales them)."""
        return []

    def examples(self, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Batch:
        """The batch to train on: the attack runs here, on the unwrapped model."""
        return Batch(x, y, x, self)

    def loss(self, model: nn.Module, batch: Batch) -> StepOutput:
        """The loss of ``batch`` through ``model`` (the wrapper, AWP's proxy or a bare module)."""
        raise NotImplementedError

    def __call__(self, model: nn.Module, attack_model: nn.Module, x: torch.Tensor,
                 y: torch.Tensor) -> StepOutput:
        """The batch loss: ``examples`` then the owner's ``loss``."""
        batch = self.examples(attack_model, x, y)
        return batch.owner.loss(model, batch)


def walk(method: Method) -> List[Method]:
    """``method`` and every method under it (depth first, each once)."""
    out, todo, seen = [], [method], set()
    while todo:
        m = todo.pop(0)
        if id(m) in seen:
            continue
        seen.add(id(m))
        out.append(m)
        todo = m.children() + todo
    return out


def cross_entropy_step(model: nn.Module, batch: Batch, adversarial: bool) -> StepOutput:
    """Cross-entropy of ``model`` on the batch's inputs (natural, PGD-AT and MAT losses)."""
    logits = model(batch.inputs)
    return StepOutput(F.cross_entropy(logits, batch.y), logits, adversarial=adversarial)


class Natural(Strategy):
    """Standard training on clean images."""

    def loss(self, model, batch):
        return cross_entropy_step(model, batch, adversarial=False)


class Adversarial(Strategy):
    """Madry et al. 2017: train on the attack's examples (PGD-L-inf, PGD-L2, FGSM, ...)."""

    def __init__(self, attack):
        self.attack = attack

    def own_attacks(self) -> list:
        return [self.attack]

    def examples(self, attack_model, x, y):
        x_adv = self.attack(attack_model, x, self.attack.labels_for(y, self.num_classes))
        return Batch(x, y, x_adv, self)

    def loss(self, model, batch):
        return cross_entropy_step(model, batch, adversarial=True)
