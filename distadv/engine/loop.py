"""One training epoch. The loop sees a prepared model and a strategy, never DDP itself."""
from __future__ import annotations

import time
from typing import Dict, Optional

import torch
from tqdm import tqdm

from ..strategies import StepOutput


def train_step(model, attack_model, strategy, optimizer, scheduler, x, y, accelerator,
               grad_clip: float) -> StepOutput:
    """One optimizer step: the strategy (attack on ``attack_model``, no communication), then
    one backward through the prepared model (the step's only gradient synchronisation)."""
    out = strategy(model, attack_model, x, y)
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(out.loss)   # under DeepSpeed this also runs engine.step()
    if grad_clip > 0 and accelerator.distributed_type != "DEEPSPEED":
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)  # DeepSpeed clips itself
    optimizer.step()
    scheduler.step()  # not prepared by Accelerate: it would step once per process
    return out


def train_epoch(model, attack_model, strategy, optimizer, scheduler, loader, accelerator,
                grad_clip: float, max_steps: Optional[int] = None,
                progress: bool = False, desc: str = "",
                memory_format=torch.contiguous_format) -> Dict[str, float]:
    """Run one epoch; returns global train metrics (loss, accuracy on the training inputs,
    images/s, share of adversarial batches). ``loader`` yields device batches, augmented."""
    model.train()
    device = accelerator.device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, correct, n, adv batches
    total = len(loader) if max_steps is None else min(len(loader), max_steps)
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step, (x, y, _) in enumerate(loader):
        if step >= total:
            break
        x = x.contiguous(memory_format=memory_format)  # loaders yield augmented device batches
        out = train_step(model, attack_model, strategy, optimizer, scheduler, x, y, accelerator,
                         grad_clip)
        with torch.no_grad():
            n = float(len(y))
            sums += torch.stack([out.loss.detach().double() * n,
                                 (out.logits.argmax(1) == y).sum().double(),
                                 torch.tensor(n, device=device, dtype=torch.float64),
                                 torch.tensor(float(out.adversarial), device=device,
                                              dtype=torch.float64)])
        bar.update(1)
    bar.close()
    elapsed = torch.tensor([time.perf_counter() - start], device=device)
    sums = accelerator.reduce(sums, reduction="sum")
    elapsed = accelerator.reduce(elapsed, reduction="mean")  # mean wall time over ranks
    n = max(sums[2].item(), 1.0)
    return {"loss": sums[0].item() / n, "acc": sums[1].item() / n,
            "images_per_s": sums[2].item() / max(elapsed.item(), 1e-9),
            "adversarial_batches": sums[3].item(), "epoch_s": elapsed.item()}
