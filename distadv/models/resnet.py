"""ResNet20 (He et al. 2016, CIFAR variant) and PreActResNet18 with a width factor."""
from __future__ import annotations

from typing import Type

import torch
import torch.nn.functional as F
from torch import nn


class _BasicBlock(nn.Module):
    """Post-activation block with the parameter-free option-A shortcut (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int, conv: Type[nn.Conv2d] = nn.Conv2d):
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin  # option A: subsample and zero-pad the channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short)


class ResNet20(nn.Module):
    """ResNet-20 for 32x32 inputs: 3 stages x 3 blocks, 16/32/64 channels (~0.27M parameters).

    ``conv`` swaps the convolution class (NoiseNet20 passes a noisy one).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, blocks: int = 3,
                 conv: Type[nn.Conv2d] = nn.Conv2d):
        super().__init__()
        self.conv1 = conv(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks):
                layers.append(_BasicBlock(cin, cout, stride if i == 0 else 1, conv))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


# The pre-activation nets' nonlinearity (``model.activation``): SiLU ("swish") is what the
# DeepMind / DM-Improves-AT WideResNets use (Gowal et al. 2020: +~1 AA point over ReLU).
ACTIVATIONS = {"relu": F.relu, "silu": F.silu}


class PreActBlock(nn.Module):
    """Pre-activation block (He et al. 2016b) with a 1x1 projection shortcut when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int, activation: str = "relu"):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(x))
        short = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return out + short


class PreActResNet(nn.Module):
    """Pre-activation ResNet: a 3x3 stem, stages of ``blocks`` PreActBlocks (the first stage
    at stride 1, the others at stride 2), BN-activation, global pooling and a linear head.
    PreActResNet18 and the WideResNets are instances; ``activation`` is relu or silu."""

    def __init__(self, stem: int, widths, blocks: int, num_classes: int = 10, in_channels: int = 3,
                 activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got '{activation}'")
        self.act = ACTIVATIONS[activation]
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        layers, cin = [], stem
        for stage, cout in enumerate(widths):
            for i in range(blocks):
                layers.append(PreActBlock(cin, cout, 2 if stage > 0 and i == 0 else 1, activation))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn(self.layers(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def PreActResNet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                   activation: str = "relu") -> PreActResNet:
    """PreActResNet18 (Rice et al. 2020's model). ``width`` scales every channel count.

    width 1: 64-128-256-512 channels, ~11.2M parameters (the seed's "Wide ResNet18");
    width 1.25: ~17.5M (the seed's "wider" net of Table 6).
    """
    c = [int(round(64 * width * m)) for m in (1, 2, 4, 8)]
    return PreActResNet(c[0], c, 2, num_classes, in_channels, activation)
