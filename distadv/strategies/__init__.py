"""Training strategies: natural, adversarial, MAT (rand/max), natural/adversarial mix, TRADES."""
from __future__ import annotations

import dataclasses

from ..attacks import build_attack
from ..registry import Registry
from .base import Adversarial, Natural, StepOutput, Strategy
from .mat import MAT
from .mix import Mix
from .trades import TRADES

STRATEGIES: Registry[Strategy] = Registry("strategy")
# How many training threats each strategy takes: (min, max). natural ignores them, so a
# recipe can switch to strategy.name=natural without deleting its attacks.
THREAT_COUNT = {"natural": (0, 99), "adversarial": (1, 1), "trades": (1, 1), "mat": (2, 8)}


@STRATEGIES.register("natural")
def _natural(attacks, cfg):
    return Natural()


@STRATEGIES.register("adversarial")
def _adversarial(attacks, cfg):
    return Adversarial(attacks[0])


@STRATEGIES.register("mat")
def _mat(attacks, cfg):
    return MAT(attacks, cfg.mode)


@STRATEGIES.register("trades")
def _trades(attacks, cfg):
    return TRADES(attacks[0], cfg.trades_beta)


def eps_scale(cfg, epoch: int) -> float:
    """Training-eps multiplier for ``epoch`` (0-based): (epoch + 1) / N during a warm-up of N
    epochs, then 1. Starting small keeps adversarial training from collapsing to a constant
    classifier, which a strong attack on a random net can cause (seen on digits at eps 0.2)."""
    n = cfg.strategy.eps_warmup_epochs
    return 1.0 if n <= 0 else min(1.0, (epoch + 1) / n)


def build_strategy(cfg, num_classes: int, epoch: int = 0) -> Strategy:
    """The strategy of a RunConfig for ``epoch``: ``cfg.strategy`` over the threats in
    ``cfg.train_attacks`` (eps and alpha scaled by ``eps_scale``), wrapped in a natural-batch
    Mix when ``strategy.natural_fraction > 0``. Cheap: the loop rebuilds it every epoch."""
    scale = eps_scale(cfg, epoch)
    attacks = [dataclasses.replace(build_attack(t), eps=t.eps * scale, alpha=t.alpha * scale)
               for t in cfg.train_attacks.values()]
    strategy = STRATEGIES.build(cfg.strategy.name, attacks=attacks, cfg=cfg.strategy)
    if cfg.strategy.natural_fraction > 0:
        strategy = Mix(strategy, cfg.strategy.natural_fraction)
    todo = [strategy]
    while todo:  # once, here: the strategies read it on every batch
        s = todo.pop()
        s.num_classes = num_classes
        todo += s.children()
    return strategy


__all__ = ["STRATEGIES", "THREAT_COUNT", "build_strategy", "eps_scale", "Strategy", "StepOutput", "Natural",
           "Adversarial", "MAT", "Mix", "TRADES"]
