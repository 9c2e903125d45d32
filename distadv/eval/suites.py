"""Attack suites: named attacks resolved against a run's threat model.

A suite (``recipes/suite/*.yaml``, typed by ``SuiteConfig``) lists attack names:

    natural            clean accuracy
    <eval attack>      the run's own ``eval_attacks`` (the seed's rows: pgd_linf, pgd_l2, fgsm),
                       with ``steps`` / ``restarts`` overridable for the multi-step ones
    eot_<eval attack>  the same PGD with EOT (``eot_samples`` random forwards per step)
    aa_linf, aa_l2     the official AutoAttack at the radius of the run's PGD of that norm
                       (standard; rand for randomised models; or ``aa_components``)
    square_linf, ...   AutoAttack's black-box Square alone

Training's per-epoch validation uses ``seed_attacks`` too: one implementation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ..attacks import AutoAttack, build_attack
from ..errors import ConfigError


@dataclass
class SuiteConfig:
    """The schema of a suite."""

    name: str = "seed"                 # the suite's name (its results file: eval/NAME.json)
    attacks: List[str] = field(default_factory=lambda: ["natural", "fgsm", "pgd_linf", "pgd_l2"])
        # natural, an eval attack, eot_*, aa_linf, square_linf... (see above): the rows
    steps: Optional[int] = None        # override the steps of the run's multi-step attacks
    restarts: Optional[int] = None     # ... and their restarts
    eot_samples: int = 10              # random forwards per EOT step
    # The official AutoAttack (pyautoattack). None = the package's own budgets; any change is
    # named in the output.
    aa_version: str = "auto"           # auto (rand if randomised, else standard) | standard | rand | plus
    aa_components: Optional[List[str]] = None   # a subset instead (e.g. [apgd-ce, apgd-t])
    aa_steps: Optional[int] = None     # APGD / FAB iterations (package: 100)
    aa_target_classes: Optional[int] = None     # APGD-T / FAB-T targets (package: 9)
    aa_square_queries: Optional[int] = None     # Square queries (package: 5000)
    repeats: int = 5                   # evaluations of a randomised model (mean ± std)
    audit: bool = False                # run the gradient-masking audit (distadv/eval/audit.py)
    audit_eps_factors: List[float] = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0])
        # audit: radii (x eps) at which accuracy must not rise
    audit_large_eps: float = 0.5       # L-inf radius at which accuracy must be about 0
    audit_zero_acc: float = 0.05       # "about 0"
    audit_steps_factor: int = 5        # the stronger PGD: steps x this, audit_restarts restarts
    audit_restarts: int = 3            # restarts of the audit's stronger PGD
    audit_tol: float = 0.01            # accuracy differences below this are noise
    audit_square_queries: int = 1000   # queries of the audit's black-box Square


def seed_attacks(run_cfg, steps: Optional[int] = None, restarts: Optional[int] = None) -> Dict[str, Callable]:
    """The run's ``eval_attacks`` as attacks (training validation and the ``seed`` suite);
    ``steps``/``restarts`` replace those of multi-step attacks (FGSM stays one step)."""
    out = {}
    for name, t in run_cfg.eval_attacks.items():
        atk = build_attack(t)
        if atk.steps > 1:
            atk.steps = steps or atk.steps
            atk.restarts = restarts or atk.restarts
        out[name] = atk
    return out


def reference_threat(run_cfg, norm: str):
    """The run's multi-step evaluation threat of ``norm`` (its radius defines AA's), or None."""
    for name, t in run_cfg.eval_attacks.items():
        if t.norm == norm and t.steps > 1:
            return name, t
    return None


def valid_names(run_cfg) -> List[str]:
    """Every attack name a suite may list for this run."""
    names = ["natural", *run_cfg.eval_attacks, *[f"eot_{k}" for k in run_cfg.eval_attacks]]
    for norm in ("linf", "l2"):
        if reference_threat(run_cfg, norm):
            names += [f"aa_{norm}", f"square_{norm}"]
    return names


def autoattack(suite: SuiteConfig, norm: str, eps: float, seed: int,
               components: Optional[List[str]] = None) -> AutoAttack:
    """The official AutoAttack with the suite's version, components and budgets."""
    comps = components or suite.aa_components
    return AutoAttack(norm=norm, eps=eps, version=suite.aa_version,
                      components=tuple(comps) if comps else None, n_iter=suite.aa_steps,
                      target_classes=suite.aa_target_classes,
                      square_queries=suite.aa_square_queries, seed=seed)


def resolve(names: List[str], run_cfg, suite: SuiteConfig, seed: int = 0) -> Dict[str, Optional[Callable]]:
    """Attack name -> attack (None for ``natural``); unknown names are refused with the list."""
    valid = valid_names(run_cfg)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ConfigError(f"unknown attack(s) {', '.join(unknown)} in suite '{suite.name}'; "
                          f"valid for this run: {', '.join(valid)}")
    seeded = seed_attacks(run_cfg, suite.steps, suite.restarts)
    out: Dict[str, Optional[Callable]] = {}
    for n in names:
        if n == "natural":
            out[n] = None
        elif n in seeded:
            out[n] = seeded[n]
        elif n.startswith("eot_"):
            atk = seed_attacks(run_cfg, suite.steps, suite.restarts)[n[4:]]
            atk.eot_samples = suite.eot_samples
            out[n] = atk
        else:
            kind, norm = n.split("_", 1)
            t = reference_threat(run_cfg, norm)[1]
            out[n] = autoattack(suite, norm, t.eps, seed, ["square"] if kind == "square" else None)
    return out
