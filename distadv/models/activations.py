"""The nonlinearities a model can use (``model.activation``): relu | silu | lwta.

An ``Activation`` is a small frozen spec that makes one ``nn.Module`` per use, given the number
of channels it acts on (LWTA checks them against its block size). ReLU and SiLU have no
parameters, so models that switched from ``F.relu`` to these modules kept their state_dict keys.
SiLU ("swish") is what the DeepMind / DM-Improves-AT WideResNets use (Gowal et al. 2020: +~1 AA
point over ReLU); LWTA is the stochastic local winner-takes-all of ``lwta.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Union

from torch import nn

from .lwta import LWTA

ACTIVATIONS: Dict[str, Callable[..., nn.Module]] = {
    "relu": lambda spec, channels: nn.ReLU(),
    "silu": lambda spec, channels: nn.SiLU(),
    "lwta": lambda spec, channels: LWTA(spec.competitors, spec.temperature, channels),
}


@dataclass(frozen=True)
class Activation:
    """Which nonlinearity, with LWTA's block size U and training temperature (unused otherwise).

    >>> Activation("lwta", competitors=2)(16)
    LWTA(competitors=2, temperature=0.67)
    """

    name: str = "relu"
    competitors: int = 2        # LWTA: units per block (U)
    temperature: float = 0.67   # LWTA: Gumbel-softmax temperature in training

    def __post_init__(self):
        if self.name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got '{self.name}'")

    def __call__(self, channels: int) -> nn.Module:
        """A fresh module acting on ``channels`` channels."""
        return ACTIVATIONS[self.name](self, channels)


def as_activation(spec: Union[str, Activation]) -> Activation:
    """``spec`` as an ``Activation`` (a bare name gets LWTA's defaults)."""
    return spec if isinstance(spec, Activation) else Activation(spec)
