"""Model factories for tests/test_external.py: ``model=tests.scripts.external_models:NAME``
(importable from the repository root) or, copied next to a test's working directory, as a
user's own module. Each takes images in [0, 1] (digits: 1 x 32 x 32, 10 classes)."""
from __future__ import annotations

import torch
from torch import nn


def small_cnn() -> nn.Module:
    """The architecture of conftest.small_cnn (its trained weights are the test checkpoint)."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 10))


class _InputNoise(nn.Module):
    def forward(self, x):
        return x + 0.05 * torch.randn_like(x)


def noisy_cnn() -> nn.Module:
    """A randomised model that brings its own weights (seeded init): for checkpoint=none."""
    torch.manual_seed(0)
    return nn.Sequential(_InputNoise(), small_cnn())


def seven_classes() -> nn.Module:
    """Logits of the wrong width for a 10-class data set."""
    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 7))


def not_a_module():
    """A factory that forgot to return the model."""
    return {"conv": "not a model"}


def needs_args(depth):
    """A constructor that cannot be called with no arguments."""
    return nn.Linear(depth, 10)
