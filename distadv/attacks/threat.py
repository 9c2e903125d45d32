"""Norm "steps": each threat model is three small operations, and PGD is written once over them.

All tensors are perturbations ``delta`` of shape (B, C, H, W) in pixel units ([0, 1] images).
Every operation is per example: an eps of 0.03 bounds each image's own perturbation.
"""
from __future__ import annotations

import torch

# Guards the L2 divisions; the same constant torchattacks uses, so that the cross-check
# in tests/test_attacks.py agrees to float rounding.
_TINY = 1e-10


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm, shaped (B, 1, 1, 1) for broadcasting."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


class LinfNorm:
    """L-inf ball: uniform random start, signed-gradient step, clamp projection."""

    name = "linf"

    @staticmethod
    def init(x: torch.Tensor, eps: float) -> torch.Tensor:
        """Uniform noise in [-eps, eps] (Madry et al. 2017)."""
        return torch.empty_like(x).uniform_(-eps, eps)

    @staticmethod
    def step(grad: torch.Tensor, alpha: float) -> torch.Tensor:
        """Steepest ascent under L-inf: alpha * sign(grad)."""
        return alpha * grad.sign()

    @staticmethod
    def project(delta: torch.Tensor, eps: float) -> torch.Tensor:
        """Clamp every coordinate to [-eps, eps]."""
        return delta.clamp(-eps, eps)

    @staticmethod
    def norm(delta: torch.Tensor) -> torch.Tensor:
        """Per-example L-inf norm, shape (B,)."""
        return delta.flatten(1).abs().amax(dim=1)


class L2Norm:
    """L2 ball: random direction and radius, normalised-gradient step, radial projection."""

    name = "l2"

    @staticmethod
    def init(x: torch.Tensor, eps: float) -> torch.Tensor:
        """Gaussian direction scaled to a radius drawn uniformly in [0, eps]."""
        delta = torch.empty_like(x).normal_()
        n = _flat_norm(delta)
        r = torch.zeros_like(n).uniform_(0, 1)
        return delta * (r / n * eps)

    @staticmethod
    def step(grad: torch.Tensor, alpha: float) -> torch.Tensor:
        """Steepest ascent under L2: alpha * grad / ||grad||."""
        return alpha * grad / (_flat_norm(grad) + _TINY)

    @staticmethod
    def project(delta: torch.Tensor, eps: float) -> torch.Tensor:
        """Scale each example's delta back onto the ball when it is outside."""
        n = _flat_norm(delta)
        return delta * torch.clamp(eps / n, max=1.0)

    @staticmethod
    def norm(delta: torch.Tensor) -> torch.Tensor:
        """Per-example L2 norm, shape (B,)."""
        return delta.flatten(1).norm(p=2, dim=1)


NORMS = {"linf": LinfNorm, "l2": L2Norm}


def get_norm(name: str):
    """The norm class for ``name`` ('linf' or 'l2')."""
    if name not in NORMS:
        raise KeyError(f"unknown norm '{name}'; valid: {', '.join(NORMS)}")
    return NORMS[name]
