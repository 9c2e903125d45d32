"""AutoAttack (Croce & Hein 2020, arXiv:2003.01690) with the paper's budgets, from
torchattacks' maintained components, combined worst-case per example.

Standard version: APGD-CE, APGD-T (9 target classes), FAB-T (9 target classes), each 100
iterations, then Square (5000 queries); each attacks only the examples still classified
correctly. torchattacks' own ``AutoAttack(version="standard")`` runs its APGD/FAB with their
default 10 iterations, 10x below the paper; here the budgets are explicit.

torchattacks is not a runtime dependency (it pins an old ``requests``); install it with
``pip install --no-deps torchattacks==3.5.1`` (``make test`` does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import nn

from .mode import attack_mode
from .threat import get_norm

COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")
_TA_NORM = {"linf": "Linf", "l2": "L2"}


def _torchattacks():
    try:
        import torchattacks
    except ModuleNotFoundError:
        from ..errors import ConfigError
        raise ConfigError("AutoAttack needs torchattacks: pip install scipy && pip install "
                          "--no-deps torchattacks==3.5.1 (see README, Dependencies)") from None
    return torchattacks


@dataclass
class AutoAttack:
    """Worst case over ``components`` per example; returns x_adv (fp32, in the ball and box).

    ``eot_iter`` > 1 averages APGD's gradients over random forwards (AutoAttack's "rand"
    version for randomised defences). ``seed`` fixes the components' random starts.
    """

    norm: str = "linf"
    eps: float = 0.03
    steps: int = 100
    target_classes: int = 9
    square_queries: int = 5000
    components: Tuple[str, ...] = COMPONENTS
    eot_iter: int = 1
    seed: int = 0
    targeted: bool = False         # the interface of PGD: labels_for / targeted

    def __post_init__(self):
        self._norm = get_norm(self.norm)
        unknown = [c for c in self.components if c not in COMPONENTS]
        if unknown or not self.components:
            from ..errors import ConfigError
            raise ConfigError(f"unknown AutoAttack component(s) {unknown}; valid: {', '.join(COMPONENTS)}")

    def labels_for(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Untargeted: the true labels."""
        return y

    def _make(self, name: str, model: nn.Module, n_classes: int):
        ta, norm = _torchattacks(), _TA_NORM[self.norm]
        targets = max(1, min(self.target_classes, n_classes - 1))
        if name == "apgd-ce":
            return ta.APGD(model, norm=norm, eps=self.eps, steps=self.steps, n_restarts=1,
                           seed=self.seed, loss="ce", eot_iter=self.eot_iter)
        if name == "apgd-t":
            atk = ta.APGDT(model, norm=norm, eps=self.eps, steps=self.steps, n_restarts=1,
                           seed=self.seed, eot_iter=self.eot_iter, n_classes=n_classes)
        elif name == "fab-t":
            atk = ta.FAB(model, norm=norm, eps=self.eps, steps=self.steps, n_restarts=1,
                         seed=self.seed, multi_targeted=True, n_classes=n_classes)
        else:
            return ta.Square(model, norm=norm, eps=self.eps, n_queries=self.square_queries,
                             n_restarts=1, seed=self.seed)
        atk.n_target_classes = targets        # torchattacks would use every other class
        return atk

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Attack ``x`` (B, C, H, W) in [0, 1] with labels ``y``; see the class docstring."""
        x = x.detach().float()
        x_adv = x.clone()
        with attack_mode(model, "eval"):
            with torch.no_grad():
                logits = model(x)
            robust = logits.argmax(1) == y
            for name in self.components:
                todo = robust.nonzero().flatten()
                if len(todo) == 0:
                    break
                adv = self._make(name, model, logits.shape[1])(x[todo], y[todo]).detach().float()
                # The threat model is enforced here, not trusted to the library.
                delta = self._norm.project(adv - x[todo], self.eps)
                adv = torch.clamp(x[todo] + delta, 0.0, 1.0)
                with torch.no_grad():
                    fooled = model(adv).argmax(1) != y[todo]
                x_adv[todo[fooled]] = adv[fooled]
                robust[todo[fooled]] = False
        return x_adv
