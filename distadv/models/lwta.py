"""Stochastic Local Winner-Takes-All activation (Panousis, Chatzis & Theodoridis 2021,
"Stochastic Local Winner-Takes-All Networks Enable Profound Adversarial Robustness",
arXiv:2112.02671; reference code konpanousis/Adversarial-LWTA-AutoAttack).

Units come in blocks of U adjacent channels (dim 1: channel pairs at each pixel of a conv map,
unit pairs of a dense layer). The block's pre-activations are the logits of a categorical over
its U units; one winner is drawn, it passes its value, the others output 0.

- Training: the paper's relaxation, value x Gumbel-softmax(logits / temperature) (soft, no
  straight-through; their code: temperature 0.67, ``concrete_sample``), so gradients reach the
  logits through the sampled mask as well as through the value.
- Evaluation: a hard random draw (Gumbel-max: winner ~ softmax(logits)), one nonzero per block.
  The reference code keeps the soft mask at temperature 0.01 at test time: the same draw up to
  a ~e^-100 leak, but its gradient through the mask is 100x sharper and vanishes almost
  everywhere. The hard draw is its limit and what attacks differentiate here (through the
  winner's value only).

The model is random at test time, so ``distadv.attacks.mode.is_randomised`` detects it and the
evaluation suites use repeats, EOT-PGD and AutoAttack ``rand``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _blocks(x: torch.Tensor, u: int) -> torch.Tensor:
    """(N, C, ...) -> (N, C // U, U, ...): the competitors on dim 2 (reshape, not view:
    channels_last maps are not viewable this way; the copy costs one activation's memory)."""
    c = x.shape[1]
    if c % u:
        raise ValueError(f"LWTA needs channels divisible by its {u} competitors, got {c} channels")
    return x.reshape(x.shape[0], c // u, u, *x.shape[2:])


def lwta(x: torch.Tensor, competitors: int = 2, temperature: float = 0.67, training: bool = True,
         hard: bool = False) -> torch.Tensor:
    """Stochastic LWTA of ``x`` (N, C) or (N, C, H, W) over blocks of ``competitors`` channels.

    ``training``: value x relaxed one-hot (Gumbel-softmax at ``temperature``; ``hard=True``:
    straight-through, the forward one-hot, the backward the relaxation's). Otherwise a hard
    random draw: exactly one unit of each block passes.

    >>> _ = torch.manual_seed(0); y = lwta(torch.randn(3, 8), training=False)
    >>> (y.reshape(3, 4, 2) != 0).sum(-1).tolist()
    [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    """
    logits = _blocks(x, competitors)
    if training:
        mask = F.gumbel_softmax(logits, tau=temperature, hard=hard, dim=2)
    else:
        # Gumbel-max: argmax(logits + G) is a draw from softmax(logits); no gradient through
        # the (piecewise constant) choice.
        g = -torch.empty_like(logits).exponential_().log()
        win = (logits.detach() + g).argmax(dim=2, keepdim=True)
        mask = torch.zeros_like(logits).scatter_(2, win, 1.0)
    return (logits * mask).reshape(x.shape)


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(q || Uniform(1/U)) of the blocks' winner posteriors q = softmax(logits) over dim 2,
    summed over the blocks (and positions) of each example, averaged over the batch: the
    variational-Bayes term of the paper's objective for this layer (the reference code has it
    switched off; ``model.lwta_kl`` weights it, 0 = off).

    >>> float(kl_to_uniform(torch.zeros(4, 3, 2)))    # uniform logits: q is the prior
    0.0
    """
    logq = F.log_softmax(logits.float(), dim=2)
    kl = (logq.exp() * logq).sum(2) + math.log(logits.shape[2])
    return kl.flatten(1).sum(1).mean()


def record_kl(model: nn.Module, on: bool = True) -> int:
    """Make every LWTA layer of ``model`` keep its KL term in training forwards; returns how
    many LWTA layers it has (0: the model has none)."""
    layers = [m for m in model.modules() if isinstance(m, LWTA)]
    for m in layers:
        m.record_kl, m.kl = on, None
    return len(layers)


def take_kl(model: nn.Module) -> Optional[torch.Tensor]:
    """The sum of the KL terms the LWTA layers kept in their last training forward (the
    loss's forward; TRADES: its adversarial one), cleared; None if none was kept."""
    terms = []
    for m in model.modules():
        if isinstance(m, LWTA) and m.kl is not None:
            terms.append(m.kl)
            m.kl = None
    return torch.stack(terms).sum() if terms else None


class LWTA(nn.Module):
    """The LWTA activation as a layer (no parameters, no buffers: swapping it for ReLU leaves a
    model's state_dict keys unchanged). ``channels`` (optional) is checked at construction so a
    bad width fails when the model is built, not at the first forward.

    >>> LWTA(competitors=2, channels=16)
    LWTA(competitors=2, temperature=0.67)
    """

    def __init__(self, competitors: int = 2, temperature: float = 0.67, channels: int = 0,
                 hard: bool = False):
        super().__init__()
        if competitors < 2:
            raise ValueError(f"LWTA needs >= 2 competitors per block, got {competitors}")
        if temperature <= 0:
            raise ValueError(f"LWTA temperature must be > 0 (the paper: 0.67), got {temperature}")
        if channels % competitors:
            raise ValueError(f"LWTA needs channels divisible by its {competitors} competitors, "
                             f"got {channels} channels")
        self.competitors, self.temperature, self.hard = competitors, temperature, hard
        # model.lwta_kl > 0 turns this on (record_kl): each training forward keeps the KL of
        # its winner posterior to the uniform prior, for the loss (take_kl). Off: no cost.
        self.record_kl = False
        self.kl: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Relaxed sample in training mode, hard random draw in eval mode."""
        if self.training and self.record_kl:
            self.kl = kl_to_uniform(_blocks(x, self.competitors))
        return lwta(x, self.competitors, self.temperature, self.training, self.hard)

    def extra_repr(self) -> str:
        """The block size and training temperature (and straight-through, if on)."""
        return (f"competitors={self.competitors}, temperature={self.temperature}"
                + (", hard=True" if self.hard else ""))
