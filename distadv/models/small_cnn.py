"""SmallCNN: the two-convolution network of the Fashion-MNIST recipes (and the demo).

conv5(16)-ReLU-pool-conv5(32)-ReLU-pool-fc(100)-ReLU-fc: 171,158 parameters at 1x28x28 and 10
classes, ~3M multiply-adds per image. Chosen for this CPU: PGD-7 adversarial training over
the 60,000 Fashion-MNIST images takes about 100 s per epoch on 2 cores (a Madry-style CNN,
32/64 channels and fc1024, costs ~5x more). "Same" padding keeps it size-agnostic: 28x28
(Fashion-MNIST) and 32x32 (digits) both work.
"""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

from .activations import Activation, as_activation


class SmallCNN(nn.Module):
    """Two 5x5 convolutions with max-pooling, then a 100-unit hidden layer; ``activation`` is
    relu (the default) | silu | lwta or an ``Activation`` (16, 32 and 100 units: U=2 fits)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 activation: Union[str, Activation] = "relu"):
        super().__init__()
        side = image_size // 4
        if side < 1:
            raise ValueError(f"SmallCNN needs images of at least 4 pixels, got {image_size}")
        act = as_activation(activation)
        # Module indices as before the activation choice: old checkpoints load unchanged.
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, padding=2), act(16), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), act(32), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(32 * side * side, 100), act(100),
                                        nn.Linear(100, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
