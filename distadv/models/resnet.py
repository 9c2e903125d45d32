"""The CIFAR ResNets of He et al. 2016 (ResNet20, any stages) and the pre-activation ResNets
(PreActResNet18 with a width factor, any stages), each with a choice of nonlinearity."""
from __future__ import annotations

from typing import Sequence, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from .activations import Activation, as_activation

ActivationSpec = Union[str, Activation]


def _per_stage(blocks: Union[int, Sequence[int]], stages: int) -> list:
    """``blocks`` as one count per stage (an int repeats)."""
    out = [blocks] * stages if isinstance(blocks, int) else list(blocks)
    if len(out) != stages or min(out) < 1:
        raise ValueError(f"need {stages} block counts >= 1 (one per stage), got {list(out)}")
    return out


class _BasicBlock(nn.Module):
    """Post-activation block with the parameter-free option-A shortcut (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int, conv: Type[nn.Conv2d] = nn.Conv2d,
                 activation: ActivationSpec = "relu"):
        super().__init__()
        if cout < cin:
            raise ValueError(f"the option-A shortcut zero-pads channels: widths must not "
                             f"decrease, got {cin} -> {cout}")
        act = as_activation(activation)
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = act(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = act(cout)
        self.pad = cout - cin  # option A: subsample and zero-pad the channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return self.act2(out + short)


class CifarResNet(nn.Module):
    """He et al. 2016's CIFAR ResNet: a 3x3 stem of ``widths[0]`` channels, stages of
    ``blocks`` post-activation blocks (stride 1 for the first stage, 2 for the others; widths
    must not decrease: option-A shortcuts), global pooling and a linear head.

    ``conv`` swaps the convolution class (NoiseNet20 passes a noisy one); ``activation`` is
    relu | silu | lwta or an ``Activation``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 blocks: Union[int, Sequence[int]] = 3, conv: Type[nn.Conv2d] = nn.Conv2d,
                 activation: ActivationSpec = "relu", widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        widths = list(widths)
        blocks = _per_stage(blocks, len(widths))
        act = as_activation(activation)
        self.conv1 = conv(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act = act(widths[0])
        layers, cin = [], widths[0]
        for stage, (cout, n) in enumerate(zip(widths, blocks)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(_BasicBlock(cin, cout, stride, conv, act))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.act(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def ResNet20(num_classes: int = 10, in_channels: int = 3, blocks: int = 3,
             conv: Type[nn.Conv2d] = nn.Conv2d, activation: ActivationSpec = "relu") -> CifarResNet:
    """ResNet-20 for 32x32 inputs: 3 stages x 3 blocks, 16/32/64 channels (~0.27M parameters)."""
    return CifarResNet(num_classes, in_channels, blocks, conv, activation)


class PreActBlock(nn.Module):
    """Pre-activation block (He et al. 2016b) with a 1x1 projection shortcut when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int, activation: ActivationSpec = "relu"):
        super().__init__()
        act = as_activation(activation)
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = act(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = act(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(x))
        short = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + short


class PreActResNet(nn.Module):
    """Pre-activation ResNet: a 3x3 stem, stages of PreActBlocks (``blocks``: one count for
    every stage, or one per stage; the first stage at stride 1, the others at stride 2),
    BN-activation, global pooling and a linear head. PreActResNet18 and the WideResNets are
    instances; ``activation`` is relu | silu | lwta or an ``Activation``."""

    def __init__(self, stem: int, widths: Sequence[int], blocks: Union[int, Sequence[int]],
                 num_classes: int = 10, in_channels: int = 3, activation: ActivationSpec = "relu"):
        super().__init__()
        act = as_activation(activation)
        widths = list(widths)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        layers, cin = [], stem
        for stage, (cout, n) in enumerate(zip(widths, _per_stage(blocks, len(widths)))):
            for i in range(n):
                layers.append(PreActBlock(cin, cout, 2 if stage > 0 and i == 0 else 1, act))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.act = act(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn(self.layers(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def PreActResNet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                   activation: ActivationSpec = "relu") -> PreActResNet:
    """PreActResNet18 (Rice et al. 2020's model). ``width`` scales every channel count.

    width 1: 64-128-256-512 channels, ~11.2M parameters (the seed's "Wide ResNet18");
    width 1.25: ~17.5M (the seed's "wider" net of Table 6).
    """
    c = [int(round(64 * width * m)) for m in (1, 2, 4, 8)]
    return PreActResNet(c[0], c, 2, num_classes, in_channels, activation)
