"""One training epoch. The loop sees a prepared model and a strategy, never DDP itself."""
from __future__ import annotations

import time
from typing import Dict, Optional

import torch
from tqdm import tqdm

from ..errors import NonFiniteLoss
from ..strategies import StepOutput
from .faults import crash_point


def train_step(model, attack_model, strategy, optimizer, scheduler, x, y, accelerator,
               grad_clip: float) -> StepOutput:
    """One optimizer step: the strategy (attack on ``attack_model``, no communication), then
    one backward through the prepared model (the step's only gradient synchronisation)."""
    out = strategy(model, attack_model, x, y)
    crash_point("train.step")
    _check_finite(out.loss, accelerator)  # before backward: the weights never see a NaN
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(out.loss)   # under DeepSpeed this also runs engine.step()
    if grad_clip > 0 and accelerator.distributed_type != "DEEPSPEED":
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)  # DeepSpeed clips itself
    optimizer.step()
    scheduler.step()  # not prepared by Accelerate: it would step once per process
    return out


def _check_finite(loss: torch.Tensor, accelerator) -> None:
    """Raise NonFiniteLoss on every rank if any rank's loss is NaN or infinite. Cost: one
    all-reduce of ``world`` numbers per step (and a device sync on GPU), small next to the
    attack's K forward/backward passes; it lets all ranks stop at the same step."""
    bad = torch.zeros(accelerator.num_processes, device=loss.device)
    bad[accelerator.process_index] = float(not torch.isfinite(loss.detach()).all())
    bad = accelerator.reduce(bad, reduction="sum")
    if bad.any():
        ranks = ", ".join(str(i) for i in bad.nonzero().flatten().tolist())
        raise NonFiniteLoss(f"the training loss is not finite on rank(s) {ranks} (here: "
                            f"{loss.item()})")


def train_epoch(model, attack_model, strategy, optimizer, scheduler, loader, accelerator,
                grad_clip: float, max_steps: Optional[int] = None,
                progress: bool = False, epoch: int = 0, epochs: int = 1,
                memory_format=torch.contiguous_format, last_good: str = "") -> Dict[str, float]:
    """Run epoch ``epoch`` (0-based) of ``epochs``; returns global train metrics (loss,
    accuracy on the training inputs, images/s, share of adversarial batches). ``loader``
    yields device batches, augmented. A non-finite loss stops every rank with NonFiniteLoss
    naming the epoch, the step and ``last_good`` (the checkpoint that is kept)."""
    desc = f"epoch {epoch + 1}/{epochs}"
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
        try:
            out = train_step(model, attack_model, strategy, optimizer, scheduler, x, y,
                             accelerator, grad_clip)
        except NonFiniteLoss as exc:
            raise NonFiniteLoss(f"{exc} at epoch {epoch + 1}, step {step + 1}/{total}; nothing "
                                f"of this epoch was saved, the last good checkpoint is "
                                f"{last_good}. Lower optim.lr, set optim.grad_clip, or use "
                                "runtime.precision=fp32") from None
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
