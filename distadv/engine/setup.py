"""The one place that knows about distribution and precision: Accelerator + prepare."""
from __future__ import annotations

from datetime import timedelta

from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def make_accelerator(cfg) -> Accelerator:
    """An Accelerator for the run: precision from the recipe, a process-group timeout so that a
    hung peer fails after ``runtime.timeout_s`` instead of hanging forever."""
    return Accelerator(
        mixed_precision=_PRECISION[cfg.runtime.precision],
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.runtime.timeout_s))],
    )


def prepare(accelerator: Accelerator, model, optimizer):
    """Wrap model and optimizer for the launch (DDP, ...); returns (model, optimizer, attack_model).

    ``attack_model`` is the unwrapped module (autocast wrapper kept): attacks run on it so that
    their K forward/backward passes trigger no gradient all-reduce and no buffer broadcast.
    """
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, optimizer, accelerator.unwrap_model(model)
