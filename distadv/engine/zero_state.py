"""Exact resume under DeepSpeed ZeRO-1/2: each rank saves and restores its own optimizer
partition (fp32 master weights + SGD momentum), in a form ``weights_only`` can load.

DeepSpeed's optimizer ``state_dict()`` holds only the calling rank's partition and pickles a
LossScaler object, so neither rank 0's copy in ``latest`` nor ``torch.load(weights_only=True)``
would work. Files are named per epoch (``zero-e{epoch}-rank{r}``) and written before
``latest``; after ``latest`` points at epoch e the files of epochs other than e and e-1 (the
``previous`` state) are deleted, so a crash at any point leaves ``latest`` and ``previous`` with
their partitions.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import RunDirError
from . import checkpoint as ck


def partition_path(ckpt_dir: Path, epoch: int, rank: int) -> Path:
    """The partition file of ``rank`` after ``epoch``."""
    return Path(ckpt_dir) / f"zero-e{epoch}-rank{rank}"


def _zero_optimizer(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # unwrap Accelerate's wrapper


def save_partition(optimizer, ckpt_dir: Path, epoch: int, rank: int) -> None:
    """Atomically write this rank's ZeRO partition for ``epoch`` (tensors and numbers only)."""
    sd = dict(_zero_optimizer(optimizer).state_dict())
    # LossScaler object -> its scale (exact for fp32/bf16; fp16's dynamic-scaler counters reset).
    sd["loss_scaler"] = {"cur_scale": float(sd["loss_scaler"].cur_scale)}
    sd["zero_stage"] = int(sd["zero_stage"])
    sd.pop("param_slice_mappings", None)  # fragment addresses: only for universal checkpoints
    ck.save_state(partition_path(ckpt_dir, epoch, rank), sd)


def load_partition(optimizer, ckpt_dir: Path, epoch: int, rank: int, world: int) -> None:
    """Restore this rank's partition (same world size; DeepSpeed reads only its own entry)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    path = partition_path(ckpt_dir, epoch, rank)
    if not path.is_file():
        raise RunDirError(f"{path} is missing: this run was saved without DeepSpeed or with "
                          "another number of processes; resume it the way it was launched")
    sd = ck.load_state(path)
    sd["loss_scaler"] = LossScaler(sd["loss_scaler"]["cur_scale"])
    sd["zero_stage"] = ZeroStageEnum(sd["zero_stage"])
    _zero_optimizer(optimizer).load_state_dict([sd] * world, load_from_fp32_weights=True)


def prune_partitions(ckpt_dir: Path, keep_epoch: int) -> None:
    """Delete partition files of epochs other than ``keep_epoch`` and the one before it (those
    of ``latest`` and ``previous``), after ``latest`` moved on."""
    keep = (f"zero-e{keep_epoch}-", f"zero-e{keep_epoch - 1}-")
    for f in Path(ckpt_dir).glob("zero-e*-rank*"):
        if not f.name.startswith(keep):
            f.unlink(missing_ok=True)
