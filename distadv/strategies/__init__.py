"""Training strategies: natural, adversarial, MAT (rand/max), natural/adversarial mix, TRADES."""
from __future__ import annotations

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


def build_strategy(cfg, num_classes: int) -> Strategy:
    """The strategy of a RunConfig: ``cfg.strategy`` over the threats in ``cfg.train_attacks``,
    wrapped in a natural-batch Mix when ``strategy.natural_fraction > 0``."""
    attacks = [build_attack(t) for t in cfg.train_attacks.values()]
    strategy = STRATEGIES.build(cfg.strategy.name, attacks=attacks, cfg=cfg.strategy)
    if cfg.strategy.natural_fraction > 0:
        strategy = Mix(strategy, cfg.strategy.natural_fraction)
    strategy.num_classes = num_classes
    return strategy


__all__ = ["STRATEGIES", "THREAT_COUNT", "build_strategy", "Strategy", "StepOutput", "Natural",
           "Adversarial", "MAT", "Mix", "TRADES"]
