"""VGG11 with BatchNorm, CIFAR variant (one linear classifier on the 512-d feature)."""
from __future__ import annotations

import torch
from torch import nn

_CFG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG11(nn.Module):
    """VGG11-BN for 32x32 inputs (~9.2M parameters; the seed's "about 11M" is approximate)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers, cin = [], in_channels
        for v in _CFG11:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
