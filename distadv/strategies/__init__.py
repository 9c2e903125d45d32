"""Training strategies: natural, adversarial, MAT (rand/max), natural/adversarial mix, TRADES,
and the single-step ones: FGSM-RS, N-FGSM, GradAlign, Free-AT."""
from __future__ import annotations

from ..attacks import build_attack
from ..registry import Registry
from . import awp, ema, guard  # noqa: F401  (register awp.*, ema.*, guard.*: the order of
                                # their hooks; the guard last, so it snapshots EMA's update)
from .addons import addon_configs, build_addons
from .fast import fgsm_rs, n_fgsm
from .free import Free
from .grad_align import GradAlign
from .base import Adversarial, Batch, Method, Natural, StepOutput, Strategy, walk
from .mat import MAT
from .mix import Mix
from .stack import TrainingMethod
from .trades import TRADES
from .warmup import EpsWarmup, eps_scale

STRATEGIES: Registry[Strategy] = Registry("strategy")
# How many training threats each strategy takes: (min, max). natural ignores them, so a
# recipe can switch to strategy.name=natural without deleting its attacks.
THREAT_COUNT = {"natural": (0, 99), "adversarial": (1, 1), "trades": (1, 1), "mat": (2, 8),
                "fgsm_rs": (1, 1), "n_fgsm": (1, 1), "grad_align": (1, 1), "free": (1, 1)}
# The single-step strategies: their threat gives the norm, eps and bn_mode; the step and the
# start come from strategy.step / strategy.noise (in eps), so the threat must say steps=1.
SINGLE_STEP = ("fgsm_rs", "n_fgsm", "grad_align", "free")


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
    return TRADES(attacks[0], cfg.trades_beta, cfg.label_smoothing, cfg.trades_start)


@STRATEGIES.register("fgsm_rs")
def _fgsm_rs(attacks, cfg):
    return fgsm_rs(attacks[0], cfg.step, cfg.noise)


@STRATEGIES.register("n_fgsm")
def _n_fgsm(attacks, cfg):
    return n_fgsm(attacks[0], cfg.step, cfg.noise)


@STRATEGIES.register("grad_align")
def _grad_align(attacks, cfg):
    return GradAlign(attacks[0], cfg.grad_align_lambda, cfg.step, cfg.noise)


@STRATEGIES.register("free")
def _free(attacks, cfg):
    return Free(attacks[0], cfg.free_replays, cfg.step)


def replays_per_batch(scfg) -> int:
    """Optimizer steps the loop takes on each batch of strategy config ``scfg``: Free-AT's m
    (``strategy.free_replays``), 1 for every other strategy. The schedule counts them."""
    return int(scfg.free_replays) if scfg.name == "free" else 1


def build_strategy(cfg, num_classes: int, epoch: int = 0) -> Strategy:
    """The strategy tree of a RunConfig: ``cfg.strategy`` over the threats in
    ``cfg.train_attacks``, wrapped in a natural-batch Mix when ``strategy.natural_fraction > 0``,
    with the training radii of ``epoch`` (the eps warm-up's scale)."""
    strategy, warmup = _tree(cfg, num_classes)
    warmup.apply(epoch)
    return strategy


def _tree(cfg, num_classes: int):
    """(the strategy tree at the configured radii, the eps warm-up over its attacks)."""
    attacks = [build_attack(t) for t in cfg.train_attacks.values()]
    strategy = STRATEGIES.build(cfg.strategy.name, attacks=attacks, cfg=cfg.strategy)
    if cfg.strategy.natural_fraction > 0:
        strategy = Mix(strategy, cfg.strategy.natural_fraction)
    for node in walk(strategy):  # once, here: the strategies read it on every batch
        node.num_classes = num_classes
    used = {id(a): a for node in walk(strategy) for a in node.own_attacks()}
    return strategy, EpsWarmup(list(used.values()), cfg.strategy.eps_warmup_epochs)


def build_method(cfg, num_classes: int, state=None) -> TrainingMethod:
    """The run's method, built once: the strategy tree plus the add-ons its config asks for
    (the eps warm-up as an epoch-start hook). ``state``: the run's TrainState, for add-ons
    that need its model."""
    strategy, warmup = _tree(cfg, num_classes)
    return TrainingMethod(strategy, [warmup, *(build_addons(cfg, state) if state else [])])


__all__ = ["STRATEGIES", "THREAT_COUNT", "SINGLE_STEP", "Free", "GradAlign", "build_strategy", "replays_per_batch", "build_method", "eps_scale", "Batch",
           "Method", "Strategy", "StepOutput", "TrainingMethod", "Natural", "Adversarial", "MAT",
           "Mix", "TRADES", "walk", "addon_configs"]
