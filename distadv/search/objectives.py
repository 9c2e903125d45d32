"""The objectives a search can trade off, each with its fixed direction, and the cost
measures: parameters and FLOPs of the trial's model.

    robust_acc  maximise  per-example worst case of the budgeted official AutoAttack (search
                          file's ``attack``) and the run's own PGD (``attack.also``) on the
                          validation split, best checkpoint
    clean_acc   maximise  natural accuracy on the same examples
    params      minimise  trainable parameters, sum(p.numel())
    flops       minimise  FLOPs of one forward pass of one image, counted by PyTorch's own
                          torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions,
                          2 FLOPs per multiply-add; normalisation, activations, pooling and
                          additions are not counted, as in fvcore and the NAS papers)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class Objective:
    """An objective's Optuna direction and its one-line meaning."""

    direction: str            # maximize | minimize
    doc: str


OBJECTIVES: Dict[str, Objective] = {
    "robust_acc": Objective("maximize", "AutoAttack (budgeted) accuracy on the validation split"),
    "clean_acc": Objective("maximize", "natural accuracy on the same validation examples"),
    "params": Objective("minimize", "trainable parameters"),
    "flops": Objective("minimize", "FLOPs of one forward pass of one image"),
}


def directions(names) -> list:
    """The Optuna directions of ``names``, in order."""
    return [OBJECTIVES[n].direction for n in names]


def count_params(model) -> int:
    """Trainable parameters (buffers such as Normalize's mean/std and BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model, shape: Tuple[int, int, int]) -> int:
    """FLOPs of one eval-mode forward pass of one ``shape`` (C, H, W) image, by PyTorch's
    FlopCounterMode (~0.1 s for a small net on CPU; no fvcore dependency)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
