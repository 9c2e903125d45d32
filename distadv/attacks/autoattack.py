"""The official AutoAttack (Croce & Hein 2020, arXiv:2003.01690): PyPI's ``pyautoattack``,
which packages fra31/auto-attack, the code RobustBench evaluates with.

Versions (the package's own attacks and budgets):
  standard  APGD-CE, APGD-T (9 targets), FAB-T (9 targets), 100 iterations each, Square 5000
  rand      APGD-CE and APGD-DLR with EOT over 20 forwards (randomised defences)
  plus      the six attacks with restarts
  auto      rand for a randomised model (two forwards differ), standard otherwise
A component list (``components``) runs those attacks at the standard version's budgets (one
restart, 9 targets), with EOT 20 on APGD for a randomised model, as ``rand`` does. Budget
changes (``n_iter``, ``target_classes``, ``square_queries``) are named by ``describe()``.

Each call is one ``run_standard_evaluation`` over the batch it is given, so the sharded runner
keeps counting every example once. Every returned example is projected onto the threat model
and re-scored by the caller: the threat model is enforced here, not trusted to the library.
The package's own checks (randomised model, softmax outputs, zero gradients, Square stronger
than the white-box attacks) are collected in ``warnings``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from .mode import attack_mode, is_randomised
from .threat import get_norm

VERSIONS = ("auto", "standard", "rand", "plus")
COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
STANDARD = {"n_iter": 100, "target_classes": 9, "square_queries": 5000}   # the package's
EOT_ITER = 20                     # the package's rand version
_NORM = {"linf": "Linf", "l2": "L2"}


def _package():
    try:
        import pyautoattack
    except ModuleNotFoundError:
        raise ConfigError("AutoAttack needs the official package: pip install "
                          "pyautoattack==0.2.0 (a dependency of distadv: pip install -e .)") from None
    return pyautoattack


def check_components(components, key: str = "AutoAttack components") -> None:
    """Refuse an empty list or an unknown attack name, naming the valid ones."""
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise ConfigError(f"unknown {key} {unknown or '(empty list)'}; valid: {', '.join(COMPONENTS)}")


def check_version(version: str, key: str = "AutoAttack version") -> None:
    """Refuse an unknown version, naming the valid ones."""
    if version not in VERSIONS:
        raise ConfigError(f"unknown {key} '{version}'; valid: {', '.join(VERSIONS)}")


class _Collect(logging.Handler):
    """Keeps the package's warnings (its logger is 'auto-attack')."""

    def __init__(self, into: Set[str]):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record):
        self.into.add(record.getMessage())


@dataclass
class AutoAttack:
    """The official AutoAttack on batches: ``attack(model, x, y) -> x_adv`` (fp32, in the
    ball and the [0, 1] box). ``n_iter`` / ``target_classes`` / ``square_queries`` None = the
    package's budgets.

    >>> aa = AutoAttack(norm="linf", eps=8 / 255, components=("apgd-ce", "apgd-t"))
    >>> aa.describe(randomised=False)
    'official AutoAttack (pyautoattack 0.2.0): apgd-ce, apgd-t at the standard budgets'
    """

    norm: str = "linf"
    eps: float = 0.03
    version: str = "auto"
    components: Optional[Tuple[str, ...]] = None
    n_iter: Optional[int] = None
    target_classes: Optional[int] = None
    square_queries: Optional[int] = None
    seed: int = 0
    targeted: bool = False         # the interface of PGD: labels_for / targeted
    warnings: Set[str] = field(default_factory=set, compare=False)
    used: str = ""                 # describe() of the last call (which version ran)

    def __post_init__(self):
        self._norm = get_norm(self.norm)
        check_version(self.version)
        if self.components is not None:
            check_components(self.components)
            self.components = tuple(self.components)
        for key in ("n_iter", "target_classes", "square_queries"):
            v = getattr(self, key)
            if v is not None and v < 1:
                raise ConfigError(f"AutoAttack {key} must be >= 1, got {v}")

    def labels_for(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Untargeted: the true labels."""
        return y

    def _version(self, randomised: bool) -> str:
        if self.components is not None:
            return "custom"
        return ("rand" if randomised else "standard") if self.version == "auto" else self.version

    def changes(self) -> List[str]:
        """The budgets that differ from the package's own, as 'name package -> used'."""
        return [f"{k} {STANDARD[k]} -> {getattr(self, k)}" for k in STANDARD
                if getattr(self, k) is not None and getattr(self, k) != STANDARD[k]]

    def describe(self, randomised: bool) -> str:
        """One line: the package, version or components, budgets and every change to them."""
        v = self._version(randomised)
        what = (f"{', '.join(self.components)} at the standard budgets" if v == "custom"
                else f"version {v}")
        if v == "custom" and randomised:
            what += f", EOT {EOT_ITER} on APGD (as version rand)"
        ch = self.changes()
        return (f"official AutoAttack (pyautoattack {_package().__version__}): {what}"
                + (f"; CHANGED from the package's budgets: {', '.join(ch)}" if ch else ""))

    def _build(self, model: nn.Module, device, randomised: bool):
        pkg = _package()
        v = self._version(randomised)
        if v == "custom":
            aa = pkg.AutoAttack(model, norm=_NORM[self.norm], eps=self.eps, seed=self.seed,
                                version="standard", device=device)
            aa.attacks_to_run, aa.version = list(self.components), "custom"
            if randomised:
                aa.apgd.eot_iter = aa.apgd_targeted.eot_iter = EOT_ITER
        else:
            aa = pkg.AutoAttack(model, norm=_NORM[self.norm], eps=self.eps, seed=self.seed,
                                version=v, device=device)
        if self.n_iter is not None:
            aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = self.n_iter
        if self.target_classes is not None:
            aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = self.target_classes
        if self.square_queries is not None:
            aa.square.n_queries = self.square_queries
        return aa

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Attack ``x`` (B, C, H, W) in [0, 1] with labels ``y``; see the class docstring."""
        x = x.detach().float()
        logger = logging.getLogger("auto-attack")
        handler, propagate = _Collect(self.warnings), logger.propagate
        logger.addHandler(handler)
        logger.propagate = False          # collected and reported once, not printed per batch
        try:
            with attack_mode(model, "eval"):
                randomised = is_randomised(model, x)
                self.used = self.describe(randomised)
                aa = self._build(model, x.device, randomised)
                adv, _ = aa.run_standard_evaluation(x, y, batch_size=max(1, len(x)))
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate
        if randomised:   # known, measured, and answered with EOT (rand, or EOT on APGD)
            self.warnings -= {w for w in self.warnings if "randomized defense" in w}
        delta = self._norm.project(adv.detach().float() - x, self.eps)
        return torch.clamp(x + delta, 0.0, 1.0)
