"""The run's training method: one strategy tree (the batch loss) plus add-ons, behind the hooks
of ``Method``; built once per run by ``distadv.strategies.build_method``."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from torch import nn

from ..models.lwta import take_kl

from .base import Method, Strategy, walk


class TrainingMethod(Method):
    """Dispatches every hook to every node (the strategy tree first, then the add-ons in
    order) and keeps their checkpointed state under their names."""

    def __init__(self, strategy: Strategy, addons: List[Method]):
        self.strategy, self.addons = strategy, list(addons)
        self.nodes = walk(strategy) + self.addons
        named = [m.name for m in self.nodes if m.name]
        if len(named) != len(set(named)):  # a bug: two nodes would share a checkpoint entry
            raise ValueError(f"training-method nodes need distinct names, got {named}")

    def children(self) -> List[Method]:
        return [self.strategy, *self.addons]

    def batch_loss(self, state, x, y):
        """The step's loss: the tree's examples (on the unwrapped model), every node's
        ``before_loss``, then the owner's loss through the prepared model."""
        batch = self.strategy.examples(state.attack_model, x, y)
        for m in self.nodes:
            m.before_loss(state, batch)
        out = batch.owner.loss(state.model, batch)
        weight = state.cfg.model.get("lwta_kl", 0.0)
        if weight:   # stochastic LWTA's variational term (model.lwta_kl; models/lwta.py)
            kl = take_kl(state.raw_model)
            if kl is not None:
                out = dataclasses.replace(out, loss=out.loss + weight * kl)
        return out

    def on_epoch_start(self, state, epoch: int) -> None:
        for m in self.nodes:
            m.on_epoch_start(state, epoch)

    def after_backward(self, state) -> None:
        for m in self.nodes:
            m.after_backward(state)

    def after_step(self, state) -> None:
        for m in self.nodes:
            m.after_step(state)

    def after_validation(self, state, metrics: Dict[str, float]) -> bool:
        changed = False
        for m in self.nodes:
            changed = m.after_validation(state, metrics) or changed  # every node runs
        return changed

    def tighten(self) -> str:
        """Every strategy node's change, joined ('' if none changed)."""
        return "; ".join(c for m in walk(self.strategy) if (c := m.tighten()))

    def on_epoch_end(self, state, metrics: Dict[str, float]) -> None:
        for m in self.nodes:
            m.on_epoch_end(state, metrics)

    def notes(self) -> List[str]:
        return [line for m in self.nodes for line in m.notes()]

    def progress(self) -> Dict:
        return {k: v for m in self.nodes for k, v in m.progress().items()}

    def eval_model(self, state) -> Optional[nn.Module]:
        """The last node's model to evaluate (EMA's average), else None (the trained one)."""
        picked = [m.eval_model(state) for m in self.nodes]
        picked = [p for p in picked if p is not None]
        return picked[-1] if picked else None

    def state_dict(self) -> Dict:
        return {m.name: sd for m in self.nodes if m.name and (sd := m.state_dict())}

    def load_state_dict(self, state: Dict) -> None:
        for m in self.nodes:
            if m.name in state:
                m.load_state_dict(state[m.name])
