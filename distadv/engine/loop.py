"""One training step and one epoch over a TrainState. The loop sees a prepared model and a
training method, never DDP or DeepSpeed itself (``engine/setup.py`` does)."""
from __future__ import annotations

import time
from typing import Dict

import torch
from tqdm import tqdm

from ..errors import NonFiniteLoss
from ..strategies import StepOutput
from .faults import crash_point
from .setup import backward_and_step


def train_step(state, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
    """One optimizer step: the method's batch loss (the attack on ``attack_model``, no
    communication), then one backward through the prepared model (the step's only gradient
    synchronisation), with the method's after_backward and after_step hooks."""
    method, accelerator = state.method, state.accelerator
    out = method.batch_loss(state, x, y)
    crash_point("train.step")
    _check_finite(out.loss, accelerator)  # before backward: the weights never see a NaN
    state.optimizer.zero_grad(set_to_none=True)
    backward_and_step(accelerator, state.model, state.optimizer, out.loss,
                      state.cfg.optim.grad_clip, lambda: method.after_backward(state))
    state.scheduler.step()  # not prepared by Accelerate: it would step once per process
    method.after_step(state)
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


def train_epoch(state, progress: bool = False) -> Dict[str, float]:
    """Run epoch ``state.epoch`` (0-based) of ``cfg.optim.epochs``; returns global train
    metrics (loss, accuracy on the training inputs, images/s, share of adversarial batches).
    The loaders yield device batches, augmented; each is trained on ``parts.replays`` times
    in a row (Free-AT), and a method that sets ``state.halt`` ends the epoch after the current
    step. A non-finite loss stops every rank with
    NonFiniteLoss naming the epoch, the step and the last good checkpoint (which is kept)."""
    epoch, epochs = state.epoch, state.cfg.optim.epochs
    accelerator, loader = state.accelerator, state.parts.train_dl
    desc = f"epoch {epoch + 1}/{epochs}"
    state.model.train()
    device = accelerator.device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, correct, n, adv batches
    total = state.parts.steps_per_epoch
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    state.halt = False
    for step, (x, y, _) in enumerate(loader):
        if step >= total or state.halt:
            break
        x = x.contiguous(memory_format=state.parts.memory_format)  # augmented device batches
        for _ in range(state.parts.replays):
            try:
                out = train_step(state, x, y)
            except NonFiniteLoss as exc:
                raise NonFiniteLoss(f"{exc} at epoch {epoch + 1}, step {step + 1}/{total}; "
                                    f"nothing of this epoch was saved, the last good checkpoint "
                                    f"is {state.last_good()}. Lower optim.lr, set optim.grad_clip, "
                                    "or use runtime.precision=fp32") from None
            with torch.no_grad():
                n = float(len(y))
                sums += torch.stack([out.loss.detach().double() * n,
                                     (out.logits.argmax(1) == y).sum().double(),
                                     torch.tensor(n, device=device, dtype=torch.float64),
                                     torch.tensor(float(out.adversarial), device=device,
                                                  dtype=torch.float64)])
            if state.halt:
                break
        bar.update(1)
    bar.close()
    elapsed = torch.tensor([time.perf_counter() - start], device=device)
    sums = accelerator.reduce(sums, reduction="sum")
    elapsed = accelerator.reduce(elapsed, reduction="mean")  # mean wall time over ranks
    n = max(sums[2].item(), 1.0)
    return {"loss": sums[0].item() / n, "acc": sums[1].item() / n,
            "images_per_s": sums[2].item() / max(elapsed.item(), 1e-9),
            "adversarial_batches": sums[3].item(), "epoch_s": elapsed.item()}
