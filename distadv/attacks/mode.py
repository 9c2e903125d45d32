"""Set the model's mode for an attack and restore it afterwards."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

_BN = (nn.modules.batchnorm._BatchNorm,)


@contextlib.contextmanager
def attack_mode(model: nn.Module, bn_mode: str = "eval"):
    """Run an attack with BatchNorm in ``bn_mode`` ('eval' or 'train'), then restore everything.

    'eval' uses the running statistics (the default: the attack sees the model that is
    evaluated). 'train' uses batch statistics, as some training recipes do; the BatchNorm
    running buffers are snapshotted and restored, because a K-step attack would otherwise
    update them K times per batch (it shifted running_mean by 0.5 in our measurements).
    Each submodule's own ``training`` flag is restored, not just the root's.
    """
    if bn_mode not in ("eval", "train"):
        raise ValueError(f"bn_mode must be 'eval' or 'train', got '{bn_mode}'")
    flags = [(m, m.training) for m in model.modules()]
    saved = []
    if bn_mode == "train":
        # Cost: one copy of the BN buffers per attack (tiny next to K forward/backward passes).
        saved = [(b, b.detach().clone()) for m in model.modules() if isinstance(m, _BN)
                 for b in m.buffers()]
    model.train(bn_mode == "train")
    try:
        yield model
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)
        for m, flag in flags:
            m.training = flag


@torch.no_grad()
def is_randomised(model: nn.Module, x: torch.Tensor) -> bool:
    """True if two eval-mode forwards of the same batch differ (input noise, PNI, dropout...):
    measured, not declared, so no randomised model can be evaluated as a deterministic one."""
    was = model.training
    model.eval()
    try:
        return not torch.equal(model(x), model(x))
    finally:
        model.train(was)
