"""The attacks whose traces the detector learns, built by the toolkit at the run's radii:
the run's own ``eval_attacks`` (FGSM, PGD-L-inf, PGD-L2; distadv/eval/suites.py) and the
official AutoAttack's APGD-CE and Square (distadv/attacks/autoattack.py)."""
from __future__ import annotations

from typing import Callable, Dict, List

from ..errors import ConfigError
from ..eval.suites import SuiteConfig, autoattack, reference_threat, seed_attacks
from .config import AUTOATTACK_NAMES

_COMPONENT = {"apgd_ce": "apgd-ce", "square": "square"}


def valid_names(run_cfg) -> List[str]:
    """Every attack name ``attacks=`` may list for this run."""
    names = list(run_cfg.eval_attacks)
    return names + [n for n in AUTOATTACK_NAMES if reference_threat(run_cfg, n.rsplit("_", 1)[1])]


def build_attacks(fcfg, run_cfg) -> Dict[str, Callable]:
    """Attack name -> ``attack(model, x, y) -> x_adv`` (with ``labels_for``); an unknown name
    is refused with the valid ones."""
    valid = valid_names(run_cfg)
    unknown = [n for n in fcfg.attacks if n not in valid]
    if unknown:
        raise ConfigError(f"unknown attack(s) {', '.join(unknown)} in attacks=; valid for this "
                          f"run: {', '.join(valid)}")
    seeded = seed_attacks(run_cfg)
    # The suites' AutoAttack builder; 'standard' budgets unless aa_steps / square_queries
    # change them (the report names every change, as evaluate.py does).
    suite = SuiteConfig(aa_version="standard", aa_steps=fcfg.aa_steps,
                        aa_square_queries=fcfg.square_queries)
    out: Dict[str, Callable] = {}
    for name in fcfg.attacks:
        if name in seeded:
            out[name] = seeded[name]
        else:
            kind, norm = name.rsplit("_", 1)
            eps = reference_threat(run_cfg, norm)[1].eps
            out[name] = autoattack(suite, norm, eps, fcfg.seed, [_COMPONENT[kind]])
    return out


def describe(attack, randomised: bool) -> str:
    """One line: the attack, its norm, radius and budget (AutoAttack: the package's own line,
    every budget change named)."""
    if hasattr(attack, "describe"):
        return attack.describe(randomised)
    return (f"PGD {attack.norm} eps {attack.eps:g}, alpha {attack.alpha:g}, {attack.steps} "
            f"step(s), {'random start' if attack.random_start else 'no random start'}")
