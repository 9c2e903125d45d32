"""Randomised models: parametric noise injection (PNI) layers and Gaussian input noise."""
from __future__ import annotations

import torch
from torch import nn


class PNIConv2d(nn.Conv2d):
    """Conv2d with trainable weight noise (PNI-W, Rakin et al. 2018, arXiv:1811.09310).

    w' = w + a * std(w) * N(0, 1), with a learnable scalar ``noise_scale`` (init 0.25) and
    fresh noise at every forward, in training and at inference. Keep ``noise_scale`` out of
    weight decay (the optimizer builder does): decay alone drives it to 0.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.noise_scale = nn.Parameter(torch.tensor(0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        noise = w.detach().std() * torch.randn_like(w)
        return self._conv_forward(x, w + self.noise_scale * noise, self.bias)


class GaussianInput(nn.Module):
    """Adds N(0, sigma^2) noise to the [0, 1] input at inference (the seed's Table 4).

    Active in eval mode only (``train_noise=True`` also adds it in training). Attacks in eval
    mode therefore see a randomised model: evaluate it with EOT as well as plain PGD.
    """

    def __init__(self, model: nn.Module, sigma: float, train_noise: bool = False):
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"input noise sigma must be > 0, got {sigma}")
        self.model, self.sigma, self.train_noise = model, sigma, train_noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.train_noise:
            x = x + self.sigma * torch.randn_like(x)
        return self.model(x)


def is_noise_param(name: str) -> bool:
    """True for PNI noise scales (excluded from weight decay)."""
    return name.endswith("noise_scale")


__all__ = ["PNIConv2d", "GaussianInput", "is_noise_param"]
