"""Model registry: ``create_model(name, **kw)`` returns a network whose first layer normalises."""
from __future__ import annotations

import inspect
from typing import Optional, Sequence

from torch import nn

from ..registry import Registry
from .basic import BasicNet
from .noise import GaussianInput, PNIConv2d, is_noise_param
from .normalize import Normalize, Normalized
from .resnet import PreActResNet18, ResNet20
from .small_cnn import SmallCNN
from .vgg import VGG11
from .wide_resnet import WideResNet

MODELS: Registry[nn.Module] = Registry("model")

# Published (rounded) parameter counts at 3x32x32 and 10 classes: the PyTorch tutorial net,
# He et al. 2016 (0.27M), Rice et al. 2020 (11.17M), the seed (~17M), Zagoruyko & Komodakis
# 2016 and Gowal et al. 2020. tests/test_models.py checks each model within 5%.
NOMINAL_PARAMS = {
    "basicnet": 62_006, "smallcnn": 219_958, "resnet20": 270_000, "noisenet20": 270_000,
    "preact_resnet18": 11_170_000, "preact_resnet18_wider": 17_000_000, "vgg11": 9_230_000,
    "wrn28_10": 36_500_000, "wrn34_10": 46_200_000, "wrn34_20": 184_500_000,
    "wrn70_16": 267_000_000,
    # DM-Improves-AT's wrn-28-10-swish / wrn-70-16-swish (RobustBench: 36.5M, 266.8M)
    "wrn28_10_swish": 36_500_000, "wrn70_16_swish": 266_800_000,
}


@MODELS.register("basicnet")
def basicnet(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """The seed's Basic net (LeNet-style)."""
    return BasicNet(num_classes, in_channels, image_size)


@MODELS.register("smallcnn")
def smallcnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """Two-conv CNN for 28x28 grey images (Fashion-MNIST recipes), 171k parameters."""
    return SmallCNN(num_classes, in_channels, image_size)


@MODELS.register("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-20 (~0.27M)."""
    return ResNet20(num_classes, in_channels)


@MODELS.register("noisenet20")
def noisenet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-20 with PNI weight noise in every convolution (the seed's NoiseNet20)."""
    return ResNet20(num_classes, in_channels, conv=PNIConv2d)


@MODELS.register("preact_resnet18")
def preact_resnet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                    activation: str = "relu") -> nn.Module:
    """PreActResNet18; width 1 ~11M, width 1.25 ~17M."""
    return PreActResNet18(num_classes, in_channels, width, activation)


@MODELS.register("preact_resnet18_wider")
def preact_resnet18_wider(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """PreActResNet18 at width 1.25 (~17.5M), the seed's Table 6 net."""
    return PreActResNet18(num_classes, in_channels, 1.25)


@MODELS.register("vgg11")
def vgg11(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """VGG11-BN, CIFAR variant."""
    return VGG11(num_classes, in_channels)


def _wrn(depth: int, k: int, default_activation: str = "relu"):
    def build(num_classes: int = 10, in_channels: int = 3,
              activation: str = default_activation) -> nn.Module:
        return WideResNet(depth, k, num_classes, in_channels, activation)
    build.__doc__ = f"WideResNet-{depth}-{k} ({default_activation} unless model.activation says)."
    return build


for _d, _k in ((28, 10), (34, 10), (34, 20), (70, 16)):
    MODELS.register(f"wrn{_d}_{_k}")(_wrn(_d, _k))
# DM-Improves-AT's wrn-28-10-swish and wrn-70-16-swish (Wang et al. 2023; Gowal et al. 2020).
for _d, _k in ((28, 10), (70, 16)):
    MODELS.register(f"wrn{_d}_{_k}_swish")(_wrn(_d, _k, "silu"))


def builder_params(name: str) -> set[str]:
    """Keyword arguments the builder for ``name`` accepts (used to validate configs)."""
    return set(inspect.signature(MODELS.get(name)).parameters)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 input_noise: float = 0.0, image_size: int = 32, **kw) -> nn.Module:
    """Build ``name`` with a Normalize first layer, optionally wrapped with input noise.

    ``image_size`` reaches the builders that take it; the others are size-agnostic.

    >>> m = create_model("basicnet", mean=[0.5] * 3, std=[0.25] * 3)
    >>> type(m.normalize).__name__
    'Normalize'
    """
    c = in_channels
    if "image_size" in builder_params(name):  # only size-dependent heads need it (BasicNet)
        kw["image_size"] = image_size
    net = MODELS.build(name, num_classes=num_classes, in_channels=c, **kw)
    model: nn.Module = Normalized(net, mean or [0.0] * c, std or [1.0] * c)
    return GaussianInput(model, input_noise) if input_noise > 0 else model


__all__ = ["MODELS", "NOMINAL_PARAMS", "create_model", "builder_params", "Normalize",
           "Normalized", "GaussianInput", "PNIConv2d", "is_noise_param"]
