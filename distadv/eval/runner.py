"""Evaluation epoch: natural accuracy and accuracy under each attack, counted exactly once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ..attacks import attack_mode
from ..engine.faults import crash_point


def _first_occurrence(idx: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each distinct value of ``idx``."""
    uniq, inverse = torch.unique(idx, return_inverse=True)
    pos = torch.arange(len(idx), device=idx.device)
    first = torch.full((len(uniq),), len(idx), dtype=pos.dtype, device=idx.device)
    return first.scatter_reduce(0, inverse, pos, reduce="amin")


@dataclass
class EvalOptions:
    """What an evaluation keeps besides the accuracies, and how far it goes.

    ``max_steps``: the first N batches only; ``keep_images``: clean/adversarial examples of
    rank 0's first batch under ``image_attack`` (default the first attack); ``memory_format``
    of the inputs; ``verdicts``: a dict filled with per-example 0/1 correctness columns."""

    max_steps: Optional[int] = None
    keep_images: int = 0
    image_attack: Optional[str] = None
    memory_format: torch.memory_format = torch.contiguous_format
    verdicts: Optional[Dict[str, torch.Tensor]] = None


def evaluate(model: nn.Module, loader, attacks: Dict[str, Callable], accelerator, num_classes: int,
             opts: Optional[EvalOptions] = None) -> Tuple[Dict[str, float], Optional[dict]]:
    """Accuracy of ``model`` (unwrapped) on ``loader``: clean and under every attack.

    Each rank attacks its own shard; per-example results are gathered once at the end (one
    collective per evaluation, not per batch) and de-duplicated by example index, so every
    example counts exactly once whatever the padding. Returns ({"natural": acc, <attack>: acc,
    "count": n}, images) where images holds clean/adversarial examples of rank 0's first batch.
    A ``verdicts`` dict is filled with the per-example 0/1 correctness of each column
    ('index', 'natural', <attack>...), ordered by example index (every rank gets them).
    """
    opts = opts or EvalOptions()
    max_steps, keep_images, image_attack = opts.max_steps, opts.keep_images, opts.image_attack
    memory_format, verdicts = opts.memory_format, opts.verdicts
    names = list(attacks)
    rows, images = [], None
    device = accelerator.device
    with attack_mode(model, "eval"):
        for step, (x, y, idx) in enumerate(loader):
            if max_steps is not None and step >= max_steps:
                break
            crash_point("eval.batch")
            x, y, idx = x.to(device, memory_format=memory_format), y.to(device), idx.to(device)
            with torch.no_grad():
                cols = [idx, (model(x).argmax(1) == y).long()]
            for name in names:
                atk = attacks[name]
                x_adv = atk(model, x, atk.labels_for(y, num_classes))
                with torch.no_grad():
                    cols.append((model(x_adv).argmax(1) == y).long())
                if images is None and keep_images and name == (image_attack or names[0]):
                    images = {"clean": x[:keep_images].cpu(), "adv": x_adv[:keep_images].cpu(),
                              "eps": getattr(atk, "eps", 0.0), "attack": name}
            rows.append(torch.stack(cols, dim=1))
    local = torch.cat(rows) if rows else torch.zeros(0, 2 + len(names), dtype=torch.long, device=device)
    table = accelerator.gather(local)
    table = table[_first_occurrence(table[:, 0])]     # torch.unique sorts: index order
    n = len(table)
    if verdicts is not None:
        for j, name in enumerate(["index", "natural", *names]):
            verdicts[name] = table[:, j].cpu()
    metrics = {"natural": table[:, 1].float().mean().item() if n else 0.0}
    for j, name in enumerate(names):
        metrics[name] = table[:, 2 + j].float().mean().item() if n else 0.0
    metrics["count"] = n
    return metrics, images
