"""WideResNet-depth-width (Zagoruyko & Komodakis 2016): WRN-28-10, 34-10, 34-20, 70-16."""
from __future__ import annotations

from .resnet import ActivationSpec, PreActResNet


def WideResNet(depth: int = 28, widen_factor: int = 10, num_classes: int = 10,
               in_channels: int = 3, activation: ActivationSpec = "relu") -> PreActResNet:
    """Pre-activation WRN; depth = 6n + 4 (n blocks per stage), widths 16k, 32k, 64k. With
    ``activation='silu'`` it is DM-Improves-AT's ``wrn-28-10-swish`` / ``wrn-70-16-swish``
    layout (stem 3x3 conv to 16, pre-activation blocks, 1x1 projection shortcuts); with
    ``activation='lwta'`` the WRN of Panousis et al. 2021 (LWTA in place of every ReLU)."""
    if (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n+4 (e.g. 28, 34, 70), got {depth}")
    k = widen_factor
    return PreActResNet(16, [16 * k, 32 * k, 64 * k], (depth - 4) // 6, num_classes, in_channels,
                        activation)
