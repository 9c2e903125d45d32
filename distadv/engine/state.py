"""The train state: everything one run holds between steps, and the checkpoint layout.

``latest`` (a verified torch state, ``weights_only``-loadable) holds::

    model       the trained weights (plain keys)
    optimizer   its state (None under DeepSpeed: per-rank ZeRO partitions, see engine/setup.py)
    scheduler   LambdaLR state         scaler   the fp16 grad scaler's state (or None)
    epoch       epochs finished        early_stop, history
    method      the training method's own state, by node name (EMA's average, ...), if any
    sampler     with data.extra: the generated sets' identities and cursors (MixSampler)

``epoch-NNN.safetensors`` (``log.keep_epochs``) the same for every epoch.
``best.safetensors`` holds the weights of the model that is evaluated (``eval_model``: EMA's
average when EMA is on, else the trained model), written when validation improves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from torch import nn

from ..data import Splits
from ..strategies import TrainingMethod, build_method
from . import checkpoint as ck
from .build import RunParts, build_run
from .early_stop import EarlyStopper
from .faults import main_writes
from .setup import optimizer_state, prune_saved_partitions, save_partitions


@dataclass
class TrainState:
    """Config, accelerator, model handles / optimizer / schedule / loaders (``parts``), the
    training method, the early stopper, the history, the epochs finished and the run's paths
    (``engine/rundir.paths``; None for a state that is never saved, as in tests)."""

    cfg: object
    accelerator: object
    parts: RunParts
    method: TrainingMethod
    stopper: EarlyStopper
    paths: Optional[Dict[str, Path]] = None
    history: List[Dict] = field(default_factory=list)
    epoch: int = 0
    halt: bool = False      # set by a method's hook: the epoch ends after the current step

    @classmethod
    def create(cls, cfg, accelerator, splits: Optional[Splits] = None,
               saved: Optional[dict] = None, paths: Optional[Dict[str, Path]] = None) -> "TrainState":
        """Build and prepare a run (``build_run``), its method and early stopper; ``saved`` (a
        ``latest`` state) restores all of them."""
        parts = build_run(cfg, accelerator, splits, saved, paths["checkpoints"] if paths else None)
        state = cls(cfg, accelerator, parts, None,
                    EarlyStopper(cfg.early_stop.patience, cfg.early_stop.min_delta), paths)
        state.method = build_method(cfg, parts.splits.info.num_classes, state)
        if saved is not None:
            state.stopper.load_state_dict(saved["early_stop"])
            state.epoch, state.history = saved["epoch"], list(saved["history"])
            state.method.load_state_dict(saved.get("method", {}))
        return state

    # Handles, so that hooks and the loop read one object.
    model = property(lambda self: self.parts.model, doc="the prepared (DDP/DeepSpeed) model")
    raw_model = property(lambda self: self.parts.raw_model, doc="the module, plain keys")
    attack_model = property(lambda self: self.parts.attack_model, doc="unwrapped, maybe compiled")
    optimizer = property(lambda self: self.parts.optimizer)
    scheduler = property(lambda self: self.parts.scheduler)

    def eval_model(self) -> nn.Module:
        """The model validation, checkpoint selection and the final test attack."""
        return self.method.eval_model(self) or self.parts.attack_model

    def eval_module(self) -> nn.Module:
        """``eval_model`` with plain state-dict keys (what best.safetensors holds)."""
        return self.method.eval_model(self) or self.parts.raw_model

    def last_good(self) -> str:
        """Where the last good state is, for errors raised during the current epoch."""
        return (f"{self.paths['latest']} (epoch {self.epoch})" if self.epoch
                else "none yet (the first epoch failed)")

    def save_epoch(self, improved: bool) -> None:
        """Checkpoint the epoch just finished (``self.history[-1]``): optimizer partitions
        (DeepSpeed, every rank), then on rank 0 best weights (if improved) and ``latest``,
        each written atomically; all ranks stop if rank 0 could not write."""
        p, acc, epoch = self.paths, self.accelerator, self.history[-1]["epoch"]
        save_partitions(acc, self.optimizer, p["checkpoints"], epoch)
        main_writes(acc, lambda: self._write(improved), f"rank 0 could not save epoch {epoch}")
        if acc.is_main_process:
            prune_saved_partitions(acc, p["checkpoints"], epoch)

    def _write(self, improved: bool) -> None:
        p, epoch = self.paths, self.history[-1]["epoch"]
        metric = self.cfg.early_stop.metric
        if improved:
            ck.save_weights(p["best"], self.eval_module().state_dict(), {
                "epoch": str(epoch), "metric": metric,
                "value": str(self.history[-1][f"val/{metric}"])})
        if self.cfg.log.keep_epochs:   # the robustness curve, attacked after the run
            ck.save_weights(p["checkpoints"] / f"epoch-{epoch:03d}.safetensors",
                            self.eval_module().state_dict(), {"epoch": str(epoch)})
        acc = self.accelerator
        state = {"model": self.raw_model.state_dict(),
                 "optimizer": optimizer_state(acc, self.optimizer),
                 "scheduler": self.scheduler.state_dict(),
                 "scaler": acc.scaler.state_dict() if acc.scaler else None,
                 "epoch": epoch, "early_stop": self.stopper.state_dict(), "history": self.history}
        method = self.method.state_dict()
        if method:  # absent for plain methods: their checkpoints stay as they were
            state["method"] = method
        if hasattr(self.parts.train_dl, "state_dict"):  # generated sets: the sampler's cursors
            state["sampler"] = self.parts.train_dl.state_dict()
        ck.save_state(p["latest"], keep_previous=p["previous"], state=state)
        # A small readable twin of the state (no tensors): `slurm/status.py` and `tools/report.py`
        # read it without loading the checkpoint. Written after `latest`, so it never runs ahead.
        ck.write_json(p["progress"], {"epoch": epoch, "metric": metric,
                                      "best_epoch": self.stopper.best_epoch,
                                      "best": self.stopper.best, "history": self.history,
                                      **self.method.progress()})   # the guard's events
