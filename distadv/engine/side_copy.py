"""A private copy of the run's module for side computations (EMA's average, AWP's proxy)."""
from __future__ import annotations

import copy

from torch import nn


def side_copy(module: nn.Module) -> nn.Module:
    """``deepcopy(module)`` without the instance-level ``forward`` that ``engine/setup.py``
    installs under DeepSpeed (autocast around the original forward): deep-copied, that closure
    would still call the *original* module, so the copy would silently compute with the
    model's weights instead of its own. The copy runs the class's forward."""
    twin = copy.deepcopy(module)
    for m in twin.modules():
        m.__dict__.pop("forward", None)
    return twin
