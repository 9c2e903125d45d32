"""Attacks in pixel space: norm steps (threat.py), one PGD (pgd.py), objectives, mode control."""
from .autoattack import AutoAttack
from .losses import LOSSES, ce_loss, cw_loss, kl_loss
from .mode import attack_mode
from .pgd import PGD, build_attack, fgsm
from .threat import NORMS, L2Norm, LinfNorm, get_norm

__all__ = ["AutoAttack", "PGD", "fgsm", "build_attack", "attack_mode", "LOSSES", "ce_loss", "cw_loss",
           "kl_loss", "NORMS", "LinfNorm", "L2Norm", "get_norm"]
