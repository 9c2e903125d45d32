"""The attack detectors: which attack (or none) made an image, from the image alone.

``Detector(residual=True)``: steganalysis-style fixed high-pass filters first (Fridrich &
Kodovsky 2012's SRM kernels: first- and second-order differences, the 3x3 KB and 5x5 KV
kernels), not trained, then a small CNN with global average pooling. An adversarial
perturbation is high-frequency noise that the image content hides; the filters suppress the
content and keep the noise (Bonnet, Furon & Bas 2020, "Adversarial images through stega
glasses"). ``residual=False`` is the baseline: the same CNN on the raw pixels, so the gap
between the two is what the filters add.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

_HP = {  # 5x5 high-pass kernels (each sums to 0: a flat image gives no residual)
    "d1_h": [[0, 0, 0], [0, -1, 1], [0, 0, 0]],
    "d1_v": [[0, 0, 0], [0, -1, 0], [0, 1, 0]],
    "d2_h": [[0, 0, 0], [1, -2, 1], [0, 0, 0]],
    "d2_v": [[0, 1, 0], [0, -2, 0], [0, 1, 0]],
    "kb": [[-1, 2, -1], [2, -4, 2], [-1, 2, -1]],
    "kv": [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2],
           [-1, 2, -2, 2, -1]],
}
_SCALE = {"d1_h": 1, "d1_v": 1, "d2_h": 2, "d2_v": 2, "kb": 4, "kv": 12}   # SRM's normalisation


def high_pass_bank() -> torch.Tensor:
    """The fixed filters as a (F, 1, 5, 5) tensor (3x3 kernels centred in 5x5)."""
    out = []
    for name, k in _HP.items():
        t = torch.tensor(k, dtype=torch.float32) / _SCALE[name]
        pad = (5 - t.shape[0]) // 2
        out.append(F.pad(t, (pad, pad, pad, pad)))
    return torch.stack(out).unsqueeze(1)


class Residuals(nn.Module):
    """Each input channel through every fixed high-pass filter (a buffer: never trained, not
    saved: it is the constant above). (B, C, H, W) -> (B, C * F, H, W), reflect-padded."""

    def __init__(self, in_channels: int):
        super().__init__()
        bank = high_pass_bank()
        self.in_channels = in_channels
        self.out_channels = in_channels * len(bank)
        self.register_buffer("weight", bank.repeat(in_channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The residuals of ``x`` (differentiable: the adaptive attack goes through them)."""
        mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode=mode), self.weight, groups=self.in_channels)


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class Detector(nn.Module):
    """Image (B, C, H, W) in [0, 1] -> logits over ``classes`` (0: clean, then the attacks).

    >>> d = Detector(in_channels=1, classes=6)
    >>> d(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 6])
    """

    def __init__(self, in_channels: int, classes: int, width: int = 32, residual: bool = True):
        super().__init__()
        self.residual = residual
        front = Residuals(in_channels) if residual else nn.Identity()
        cin = front.out_channels if residual else in_channels
        self.features = nn.Sequential(front, _block(cin, width), _block(width, width),
                                      _block(width, 2 * width, stride=2),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, one row per image."""
        return self.head(self.features(x))


def train_detector(model: Detector, images: torch.Tensor, kind: torch.Tensor, dcfg, *,
                   device, log: Callable[..., None] = print) -> Detector:
    """Fit ``model`` to (images, kind) with Adam and cross-entropy, ``dcfg.epochs`` passes in
    a seeded order (the same detector for the same data and seed). Classes are weighted by
    their inverse frequency: AutoAttack's components keep only the images they fooled, so
    their classes can be 10x smaller than the others. Cost: the set is a few thousand
    images; seconds on a CPU."""
    gen = torch.Generator().manual_seed(dcfg.seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=dcfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, dcfg.epochs)
    images, kind = images.to(device), kind.to(device)
    counts = torch.bincount(kind, minlength=model.head.out_features).float()
    weight = (counts.sum() / counts.clamp(min=1) / len(counts)).to(device)
    for epoch in range(dcfg.epochs):
        perm = torch.randperm(len(kind), generator=gen).to(device)
        total, n = 0.0, 0
        for i in range(0, len(perm), dcfg.batch_size):
            b = perm[i:i + dcfg.batch_size]
            loss = F.cross_entropy(model(images[b]), kind[b], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(b), n + len(b)
        sched.step()
        if epoch == dcfg.epochs - 1 or (epoch + 1) % 10 == 0:
            log(f"  epoch {epoch + 1}/{dcfg.epochs}: train loss {total / max(n, 1):.4f}")
    return model.eval()


@torch.no_grad()
def probabilities(model: Detector, images: torch.Tensor, device, batch: int = 512) -> torch.Tensor:
    """Softmax over the classes, (N, K) on the CPU; eval mode."""
    model.eval()
    out = [F.softmax(model(images[i:i + batch].to(device)).float(), 1).cpu()
           for i in range(0, len(images), batch)]
    return torch.cat(out) if out else torch.zeros(0, model.head.out_features)


def new_detector(in_channels: int, classes: int, dcfg, residual: bool) -> Detector:
    """A freshly initialised detector, seeded by ``dcfg.seed`` (identical on every call)."""
    torch.manual_seed(dcfg.seed)
    return Detector(in_channels, classes, dcfg.width, residual)
