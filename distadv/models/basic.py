"""BasicNet: the small LeNet-style CNN behind the seed's Table 1 (PyTorch's CIFAR tutorial net)."""
from __future__ import annotations

import torch
from torch import nn


class BasicNet(nn.Module):
    """conv5-pool-conv5-pool-fc120-fc84-fc (62,006 parameters on 3x32x32, 10 classes).

    ``image_size`` sets the input side (the conv stack needs >= 16 pixels).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"BasicNet needs images of at least 16 pixels, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
