"""The adversarial-training step the field uses today, re-implemented for benchmarking.

It follows the pattern of Rice et al.'s ``train_cifar.py`` (github.com/locuslab/robust_overfitting)
and of most paper scripts: fp32; the model stays in train mode during the attack; every attack
step calls ``loss.backward()``, which also computes (and accumulates) all weight gradients;
after the restarts, a selection forward over the whole batch keeps the worst delta; after the
optimizer step, a clean train-mode forward is run for logging. Written from that description,
not copied; ``tools/bench.py`` times it side by side with distadv's step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_attack_pgd(model, x, y, eps, alpha, steps, restarts=1):
    """L-inf PGD as in the reference scripts: backward() into the parameters at every step."""
    max_loss = torch.zeros(y.shape[0], device=x.device)
    max_delta = torch.zeros_like(x)
    for _ in range(restarts):
        delta = torch.zeros_like(x).uniform_(-eps, eps)
        delta = torch.clamp(delta, -x, 1 - x)
        delta.requires_grad = True
        for _ in range(steps):
            loss = F.cross_entropy(model(x + delta), y)
            loss.backward()                     # weight gradients computed and accumulated too
            grad = delta.grad.detach()
            d = torch.clamp(delta + alpha * torch.sign(grad), -eps, eps)
            delta.data = torch.clamp(d, -x, 1 - x)
            delta.grad.zero_()
        all_loss = F.cross_entropy(model(x + delta), y, reduction="none")  # selection forward
        keep = all_loss >= max_loss
        max_delta[keep] = delta.detach()[keep]
        max_loss = torch.max(max_loss, all_loss)
    return max_delta


def reference_train_step(model, opt, x, y, eps=0.03, alpha=0.0075, steps=10):
    """One training step of the reference loop (model in train mode throughout)."""
    model.train()
    delta = reference_attack_pgd(model, x, y, eps, alpha, steps)
    robust_out = model(torch.clamp(x + delta, 0, 1))
    loss = F.cross_entropy(robust_out, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    clean = model(x)   # the scripts log clean accuracy this way: train mode, graph built
    return loss.item(), clean.detach()
