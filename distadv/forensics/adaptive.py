"""The adaptive attack: PGD against the classifier and the detector together. A detector that
is never attacked proves nothing (Carlini & Wagner 2017, "Adversarial examples are not easily
detected"): the attacker who knows it is there fools the classifier while the detector says
'clean'.

The toolkit's own PGD (distadv/attacks/pgd.py, at the run's L-inf radius) runs on a joint
module whose output is [classifier logits, detector logits], maximising

    min(CW margin of the classifier, margin) + weight * log p_detector(clean)

The classifier term is the Carlini-Wagner margin capped at ``margin``: once the image is
misclassified with that margin, its gradient vanishes and every step goes into looking clean
(uncapped cross-entropy would keep growing and drown the detector term). One attack per
``weight``: the report shows the trade-off, not only the best point.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import PGD, cw_loss
from ..errors import ConfigError
from ..eval.suites import reference_threat


class Joint(nn.Module):
    """[classifier(x), detector(x)] side by side: one forward for the attack's objective."""

    def __init__(self, classifier: nn.Module, detector: nn.Module):
        super().__init__()
        self.classifier, self.detector = classifier, detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, classes + detector classes) logits."""
        return torch.cat([self.classifier(x).float(), self.detector(x).float()], dim=1)


def joint_objective(num_classes: int, weight: float, margin: float) -> Callable:
    """The per-example objective the PGD maximises (see the module docstring)."""
    def objective(out: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
        logits, det = out[:, :num_classes], out[:, num_classes:]
        fool = cw_loss(logits, y).clamp(max=margin)
        return fool + weight * F.log_softmax(det, dim=1)[:, 0]
    return objective


def adaptive_pgd(run_cfg, acfg, num_classes: int, weight: float) -> PGD:
    """The PGD of one adaptive attack at the run's L-inf radius (its pgd step size unless
    ``adaptive.alpha``); refused for a run without an L-inf evaluation attack."""
    ref = reference_threat(run_cfg, "linf")
    if ref is None:
        raise ConfigError("the adaptive attack runs at the run's L-inf radius; this run has no "
                          "multi-step L-inf eval attack (add one to eval_attacks when training)")
    t = ref[1]
    return PGD(norm="linf", eps=t.eps, alpha=acfg.alpha or t.alpha, steps=acfg.steps,
               random_start=True, loss=joint_objective(num_classes, weight, acfg.margin))


def adaptive_transform(classifier: nn.Module, detector: nn.Module, pgd: PGD) -> Callable:
    """``(x, y) -> x_adv`` for ``dataset.attack_shard``: the PGD on the joint module (both in
    eval mode; gradients w.r.t. the input only, as every attack of the toolkit)."""
    joint = Joint(classifier, detector).eval()

    def transform(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pgd(joint, x, y)
    return transform
