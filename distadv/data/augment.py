"""Batched data augmentation on the device: random crop with zero padding, horizontal flip."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Per-example random crop of the zero-padded batch, then a random horizontal flip.

    One gather for the whole batch (no Python loop over images); uses the global RNG, which
    the loop reseeds per (seed, epoch, rank) so that resumed runs draw the same crops.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])
    if flip:
        do_flip = torch.rand(b, device=x.device) < 0.5
        cols = torch.where(do_flip[:, None], cols.flip(1), cols)
    cols = cols[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]
