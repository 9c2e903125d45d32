"""Model registry: ``create_model(name, **kw)`` returns a network whose first layer normalises."""
from __future__ import annotations

import inspect
from typing import List, Optional, Sequence

from torch import nn

from ..registry import Registry
from .activations import ACTIVATIONS, Activation
from .basic import BasicNet
from .lwta import LWTA
from .noise import GaussianInput, PNIConv2d, is_noise_param
from .normalize import Normalize, Normalized
from .resnet import CifarResNet, PreActResNet, PreActResNet18, ResNet20
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
    # The generic nets at their defaults are ResNet20 and PreActResNet18.
    "resnet": 270_000, "preact_resnet": 11_170_000,
    # LWTA has no parameters: the ReLU nets' counts. WRN-34-1 / 34-5 counted from the layout
    # (Panousis et al.'s code also builds an unused 'sub_block1', which its counts include).
    "lwta_resnet20": 270_000, "lwta_wrn34_1": 466_700, "lwta_wrn34_5": 11_554_000,
    "lwta_wrn34_10": 46_200_000,
}

# model.lwta_competitors / model.lwta_temperature defaults (the paper's U=2, 0.67).
LWTA_DEFAULTS = {"lwta_competitors": 2, "lwta_temperature": 0.67}


def _act(activation: str, lwta_competitors: int, lwta_temperature: float) -> Activation:
    return Activation(activation, lwta_competitors, lwta_temperature)


@MODELS.register("basicnet")
def basicnet(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """The seed's Basic net (LeNet-style)."""
    return BasicNet(num_classes, in_channels, image_size)


@MODELS.register("smallcnn")
def smallcnn(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
             activation: str = "relu", lwta_competitors: int = 2,
             lwta_temperature: float = 0.67) -> nn.Module:
    """Two-conv CNN for 28x28 grey images (Fashion-MNIST recipes), 171k parameters."""
    return SmallCNN(num_classes, in_channels, image_size,
                    _act(activation, lwta_competitors, lwta_temperature))


@MODELS.register("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3, activation: str = "relu",
             lwta_competitors: int = 2, lwta_temperature: float = 0.67) -> nn.Module:
    """ResNet-20 (~0.27M)."""
    return ResNet20(num_classes, in_channels,
                    activation=_act(activation, lwta_competitors, lwta_temperature))


@MODELS.register("resnet")
def resnet(num_classes: int = 10, in_channels: int = 3, blocks: Optional[List[int]] = None,
           widths: Optional[List[int]] = None, activation: str = "relu",
           lwta_competitors: int = 2, lwta_temperature: float = 0.67) -> nn.Module:
    """He et al.'s CIFAR ResNet with ``blocks`` / ``widths`` per stage (default: ResNet20's
    [3, 3, 3] / [16, 32, 64]; widths must not decrease)."""
    widths = list(widths or [16, 32, 64])
    return CifarResNet(num_classes, in_channels, list(blocks or [3] * len(widths)),
                       activation=_act(activation, lwta_competitors, lwta_temperature),
                       widths=widths)


@MODELS.register("lwta_resnet20")
def lwta_resnet20(num_classes: int = 10, in_channels: int = 3, lwta_competitors: int = 2,
                  lwta_temperature: float = 0.67) -> nn.Module:
    """ResNet-20 with stochastic LWTA (Panousis et al. 2021) in place of every ReLU (~0.27M)."""
    return ResNet20(num_classes, in_channels,
                    activation=_act("lwta", lwta_competitors, lwta_temperature))


@MODELS.register("noisenet20")
def noisenet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet-20 with PNI weight noise in every convolution (the seed's NoiseNet20)."""
    return ResNet20(num_classes, in_channels, conv=PNIConv2d)


@MODELS.register("preact_resnet18")
def preact_resnet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                    activation: str = "relu", lwta_competitors: int = 2,
                    lwta_temperature: float = 0.67) -> nn.Module:
    """PreActResNet18; width 1 ~11M, width 1.25 ~17M."""
    return PreActResNet18(num_classes, in_channels, width,
                          _act(activation, lwta_competitors, lwta_temperature))


@MODELS.register("preact_resnet")
def preact_resnet(num_classes: int = 10, in_channels: int = 3, blocks: Optional[List[int]] = None,
                  widths: Optional[List[int]] = None, activation: str = "relu",
                  lwta_competitors: int = 2, lwta_temperature: float = 0.67) -> nn.Module:
    """A PreActResNet with ``blocks`` / ``widths`` per stage (any number of stages; stem =
    widths[0]; stride 1 in the first stage, 2 in the others). Default: PreActResNet18's
    [2, 2, 2, 2] / [64, 128, 256, 512]."""
    widths = list(widths or [64, 128, 256, 512])
    return PreActResNet(widths[0], widths, list(blocks or [2] * len(widths)), num_classes,
                        in_channels, _act(activation, lwta_competitors, lwta_temperature))


@MODELS.register("preact_resnet18_wider")
def preact_resnet18_wider(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """PreActResNet18 at width 1.25 (~17.5M), the seed's Table 6 net."""
    return PreActResNet18(num_classes, in_channels, 1.25)


@MODELS.register("vgg11")
def vgg11(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """VGG11-BN, CIFAR variant."""
    return VGG11(num_classes, in_channels)


def _wrn(depth: int, k: int, default_activation: str = "relu"):
    def build(num_classes: int = 10, in_channels: int = 3, activation: str = default_activation,
              lwta_competitors: int = 2, lwta_temperature: float = 0.67) -> nn.Module:
        return WideResNet(depth, k, num_classes, in_channels,
                          _act(activation, lwta_competitors, lwta_temperature))
    build.__doc__ = f"WideResNet-{depth}-{k} ({default_activation} unless model.activation says)."
    return build


def _lwta_wrn(depth: int, k: int):
    def build(num_classes: int = 10, in_channels: int = 3, lwta_competitors: int = 2,
              lwta_temperature: float = 0.67) -> nn.Module:
        return WideResNet(depth, k, num_classes, in_channels,
                          _act("lwta", lwta_competitors, lwta_temperature))
    build.__doc__ = (f"WideResNet-{depth}-{k} with stochastic LWTA in place of every ReLU "
                     "(Panousis et al. 2021).")
    return build


for _d, _k in ((28, 10), (34, 10), (34, 20), (70, 16)):
    MODELS.register(f"wrn{_d}_{_k}")(_wrn(_d, _k))
# DM-Improves-AT's wrn-28-10-swish and wrn-70-16-swish (Wang et al. 2023; Gowal et al. 2020).
for _d, _k in ((28, 10), (70, 16)):
    MODELS.register(f"wrn{_d}_{_k}_swish")(_wrn(_d, _k, "silu"))
# Panousis et al. 2021's WRN-34-1 / 34-5 / 34-10 with LWTA (their code's widths).
for _k in (1, 5, 10):
    MODELS.register(f"lwta_wrn34_{_k}")(_lwta_wrn(34, _k))


def builder_params(name: str) -> set[str]:
    """Keyword arguments the builder for ``name`` accepts (used to validate configs)."""
    return set(inspect.signature(MODELS.get(name)).parameters)


def model_activation(name: str, activation: Optional[str] = None) -> Optional[str]:
    """The nonlinearity ``name`` builds with ``model.activation=activation`` (null: the
    builder's default; 'lwta' for the lwta_* nets), or None where it has no choice."""
    params = inspect.signature(MODELS.get(name)).parameters
    if activation is not None:
        return activation
    if "activation" in params:
        return params["activation"].default
    return "lwta" if "lwta_competitors" in params else None


def model_kwargs(model_cfg) -> dict:
    """The builder keywords a ``ModelConfig`` sets: width, activation, blocks, widths when
    given; the LWTA keys wherever the builder takes them (training and evaluation build the
    model with these, and the config check too)."""
    kw = {k: model_cfg[k] for k in ("width", "activation", "blocks", "widths")
          if model_cfg.get(k) is not None}
    for k in ("blocks", "widths"):
        if k in kw:
            kw[k] = [int(v) for v in kw[k]]
    params = builder_params(model_cfg.name)
    kw.update({k: model_cfg.get(k, v) for k, v in LWTA_DEFAULTS.items() if k in params})
    return kw


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


__all__ = ["MODELS", "NOMINAL_PARAMS", "LWTA_DEFAULTS", "ACTIVATIONS", "Activation", "LWTA",
           "create_model", "builder_params", "model_activation", "model_kwargs", "Normalize",
           "Normalized", "GaussianInput", "PNIConv2d", "is_noise_param"]
