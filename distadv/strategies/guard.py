"""The catastrophic-overfitting guard (``guard.*``), for any training method.

Single-step training can collapse within a few hundred steps: PGD accuracy falls to about 0
while FGSM accuracy (and the training accuracy under the method's own attack) looks fine or
rises (Wong et al. 2020; their guard: PGD-5 on the first training batch every epoch, stop on a
20-point drop). Here, every ``guard.every`` optimizer steps and at every epoch end:

- a probe: PGD-K (``guard.steps``, alpha 2.5 eps / K, random start) and FGSM at the training
  threat's full eps on ``guard.examples`` fixed training examples, through the trained model
  (not EMA's average, which lags a collapse), in eval mode;
- at epoch ends also the validation the run already computes: the early-stop metric and the
  validation FGSM (an eval attack named ``fgsm``, or any one-step one), on the eval model.

A signal collapses when its PGD accuracy is more than ``guard.threshold`` below its best while
its FGSM accuracy is less than ``guard.threshold`` below its value at that best (both falling
is divergence, not catastrophic overfitting). Then ``guard.action``:

- ``rollback``: restore the state of the last good check (see below: the weights, the
  optimizer's momentum, the other add-ons' state such as EMA's average), keep the step count,
  the schedule and the data order going, and ``tighten`` the strategy (plain FGSM: a random
  start; FGSM-RS: step x0.8; N-FGSM: noise +1 eps; GradAlign: lambda x2; Free: step x0.8;
  PGD/TRADES: unchanged). After
  ``guard.max_rollbacks`` rollbacks the next collapse stops the run.
- ``stop``: end the run after the current step; the best checkpoint (selected before the
  collapse) is what it keeps and tests.

Each firing is one console line, an entry of ``progress.json`` / ``results.json`` ("guard") and a
TensorBoard text (``guard``), next to the scalars guard/pgd, guard/fgsm, guard/fired.

The snapshot is taken at checks that are *good*: within half the threshold of the best on every
signal read (a state that has not yet collapsed may already be sliding, and a rollback to it
collapses again; measured on Fashion-MNIST at eps 0.3).

Never changes a run that does not collapse: the probe runs under a forked RNG, in eval mode
(no BatchNorm update), and the snapshot is a copy, so a guarded run that never fires is
bit-identical to an unguarded one (tested). Resumable: the bests, the step count and the
events are checkpointed, and the snapshot too when it is older than the saved state (when the
epoch-end check was good, the saved state *is* the snapshot and a resumed run takes it from the
checkpoint). Cost per check: (K + 2) forward/backward passes over ``guard.examples``
images, one all-reduce, and a copy of the weights and the momentum (BENCHMARKS.md).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from ..attacks import PGD, attack_mode
from ..data.base import unit_floats
from ..engine.setup import uses_deepspeed
from ..errors import ConfigError
from .addons import register_addon
from .base import Method, walk
from .collapse import Signal


@dataclass
class GuardConfig:
    """``guard.*``: the catastrophic-overfitting guard (off by default)."""

    enabled: bool = False       # watch for catastrophic overfitting (PGD probes)
    every: int = 200            # optimizer steps between probes (0: at epoch ends only)
    examples: int = 256         # fixed training examples probed (split across the ranks)
    steps: int = 10             # the probe's PGD steps (alpha = 2.5 eps / steps)
    threshold: float = 0.2      # collapse: PGD accuracy this far below its best (Wong et al.: 0.2)
    action: str = "rollback"    # rollback | stop
    max_rollbacks: int = 3      # rollbacks before a collapse stops the run


def _fgsm_key(cfg) -> Optional[str]:
    """The validation FGSM's metric: eval attack 'fgsm', else the first one-step attack."""
    attacks = cfg.eval_attacks
    if "fgsm" in attacks:
        return "fgsm"
    return next((k for k, t in attacks.items() if t.steps == 1), None)


class Guard(Method):
    """Probes, detects and acts (see the module docstring)."""

    name = "guard"

    def __init__(self, cfg: GuardConfig, state):
        run = state.cfg
        threat = next(iter(run.train_attacks.values()))
        eps, k = float(threat.eps), int(cfg.steps)
        self.cfg, self.metric, self.fgsm_key = cfg, run.early_stop.metric, _fgsm_key(run)
        self.pgd = PGD(norm=threat.norm, eps=eps, alpha=2.5 * eps / k, steps=k, bn_mode="eval")
        self.fgsm = PGD(norm=threat.norm, eps=eps, alpha=eps, steps=1, random_start=False)
        acc = state.accelerator
        train = state.parts.splits.train
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(run.seed + 17))
        mine = pick[:min(cfg.examples, len(train))][acc.process_index::acc.num_processes]
        self.x = unit_floats(train.images[mine]).to(acc.device).contiguous(
            memory_format=state.parts.memory_format)
        self.y = train.labels[mine].to(acc.device)
        self.probe, self.val = Signal("train probe"), Signal("validation")
        self.steps, self.rollbacks, self.stopped = 0, 0, False
        self.events: List[Dict] = []
        self._new: List[str] = []
        self._snapshot = None
        self._snapshot_step = 0
        self.seconds = 0.0           # spent probing and copying (part of the training time)
        self.last = {"pgd": float("nan"), "fgsm": float("nan")}

    # -- hooks ---------------------------------------------------------------------------
    def on_epoch_start(self, state, epoch: int) -> None:
        if self._snapshot is None:    # the run's start, or a resume: the state is good
            self._snapshot = self._capture(state)
            self._snapshot_step = self.steps

    def after_step(self, state) -> None:
        self.steps += 1
        if self.cfg.every and self.steps % self.cfg.every == 0:
            self._check(state, None)

    def after_validation(self, state, metrics: Dict[str, float]) -> bool:
        start = time.perf_counter()
        rolled = self._check(state, metrics)
        metrics.update({"guard/pgd": self.last["pgd"], "guard/fgsm": self.last["fgsm"],
                        "guard/fired": float(len(self.events)), "guard/seconds": self.seconds,
                        "guard/check_s": time.perf_counter() - start})   # this check alone
        return rolled

    def notes(self) -> List[str]:
        lines, self._new = self._new, []
        return lines

    def progress(self) -> Dict:
        return {"guard": {"action": self.cfg.action, "fired": len(self.events),
                          "rollbacks": self.rollbacks, "events": list(self.events)}}

    def state_dict(self) -> Dict:
        out = {"probe": self.probe.state_dict(), "val": self.val.state_dict(),
               "steps": self.steps, "rollbacks": self.rollbacks, "events": list(self.events),
               "seconds": self.seconds, "stopped": self.stopped}
        if self._snapshot is not None and self._snapshot_step != self.steps:
            # the last good state is older than the one being saved: keep it (a copy of the
            # weights and the momentum) so that a resumed run rolls back to the same state
            out["snapshot"], out["snapshot_step"] = self._snapshot, self._snapshot_step
        return out

    def load_state_dict(self, state: Dict) -> None:
        self.probe.load_state_dict(state["probe"])
        self.val.load_state_dict(state["val"])
        self.steps, self.rollbacks = int(state["steps"]), int(state["rollbacks"])
        self.events, self.seconds = list(state["events"]), float(state["seconds"])
        self.stopped = bool(state["stopped"])
        if "snapshot" in state:
            self._snapshot, self._snapshot_step = state["snapshot"], int(state["snapshot_step"])

    # -- the check -----------------------------------------------------------------------
    def _check(self, state, val: Optional[Dict[str, float]]) -> bool:
        """Probe (and read validation); act on a collapse. True if the weights were replaced."""
        if self.stopped:            # the run is ending: nothing more to decide
            return False
        start = time.perf_counter()
        pgd, fgsm = self._probe(state)
        self.last = {"pgd": pgd, "fgsm": fgsm}
        found = []
        if self.probe.collapsed(pgd, fgsm, self.cfg.threshold):
            found.append((self.probe, pgd, fgsm))
        v = self._val_pair(val)
        if v is not None and self.val.collapsed(*v, self.cfg.threshold):
            found.append((self.val, *v))
        rolled = False
        if not found:
            self.probe.update(pgd, fgsm)
            if v is not None:
                self.val.update(*v)
            if self._good(pgd, v):   # a state worth returning to: near the best, not sliding
                self._snapshot, self._snapshot_step = self._capture(state), self.steps
        else:
            rolled = self._act(state, found)
        self.seconds += time.perf_counter() - start
        return rolled

    def _good(self, pgd: float, v) -> bool:
        """Within half the threshold of the best on every signal read (a state that is only
        'not yet collapsed' may already be sliding: a rollback to it would collapse again)."""
        half = self.cfg.threshold / 2
        return self.probe.best - pgd <= half and (v is None or self.val.best - v[0] <= half)

    def _val_pair(self, val):
        if val is None or self.fgsm_key is None or self.metric == "natural":
            return None
        return float(val[f"val/{self.metric}"]), float(val[f"val/{self.fgsm_key}"])

    @torch.no_grad()
    def _accuracy(self, model, x) -> torch.Tensor:
        with attack_mode(model, "eval"):
            return (model(x).argmax(1) == self.y).sum().double()

    def _probe(self, state):
        """(PGD accuracy, FGSM accuracy) on the fixed examples, summed over the ranks."""
        model, acc = state.attack_model, state.accelerator
        devices = [acc.device] if acc.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):      # the run's RNG stream is untouched
            counts = torch.stack([self._accuracy(model, self.pgd(model, self.x, self.y)),
                                  self._accuracy(model, self.fgsm(model, self.x, self.y)),
                                  torch.tensor(float(len(self.y)), dtype=torch.float64,
                                               device=self.y.device)])
        counts = acc.reduce(counts, reduction="sum")    # every rank decides alike
        n = max(counts[2].item(), 1.0)
        return counts[0].item() / n, counts[1].item() / n

    # -- acting --------------------------------------------------------------------------
    def _capture(self, state) -> Dict:
        """A copy of what a rollback restores: weights and buffers, the optimizer's state, and
        the state of every add-on but this guard (EMA's average). The strategy's knobs are
        left out on purpose: they move forward only (each rollback tightens further)."""
        others = {m.name: m.state_dict() for m in state.method.addons if m is not self and m.name}
        return copy.deepcopy({"model": state.raw_model.state_dict(),
                              "optimizer": state.optimizer.state_dict(), "addons": others})

    def _restore(self, state) -> None:
        snap = copy.deepcopy(self._snapshot)     # the snapshot stays for a later rollback
        state.raw_model.load_state_dict(snap["model"])
        lrs = [g["lr"] for g in state.optimizer.param_groups]
        state.optimizer.load_state_dict(snap["optimizer"])
        for g, lr in zip(state.optimizer.param_groups, lrs):   # the schedule goes on
            g["lr"] = lr
        for m in state.method.addons:
            if m.name in snap["addons"]:
                m.load_state_dict(snap["addons"][m.name])
        for m in walk(state.method.strategy):    # reloading its own knobs restarts what a
            if m.name:                           # strategy carries per batch (Free's delta)
                m.load_state_dict(m.state_dict())

    def _act(self, state, found) -> bool:
        signal, pgd, fgsm = found[0]
        where = f"epoch {state.epoch + 1}, step {self.steps}"
        what = (f"{signal.name} PGD-{self.cfg.steps} accuracy {pgd:.3f} (best {signal.best:.3f}), "
                f"FGSM {fgsm:.3f} ({signal.fgsm_at_best:.3f} at the best)")
        stop = self.cfg.action == "stop" or self.rollbacks >= self.cfg.max_rollbacks
        if stop:
            self.stopped = True
            state.stopper.stop()
            state.halt = True
            done = ("stopped the run; it keeps the best checkpoint" +
                    ("" if self.cfg.action == "stop" else
                     f" (guard.max_rollbacks={self.cfg.max_rollbacks} reached)"))
        else:
            self._restore(state)
            change = state.method.tighten()
            self.rollbacks += 1
            done = (f"rolled back to step {self._snapshot_step}" +
                    (f" and set {change}" if change else " (the method has nothing to tighten)"))
        line = f"distadv: guard: catastrophic overfitting at {where}: {what}; {done}"
        self.events.append({"epoch": state.epoch + 1, "step": self.steps, "signal": signal.name,
                            "pgd": pgd, "fgsm": fgsm, "best": signal.best,
                            "action": "stop" if stop else "rollback", "message": line})
        self._new.append(line)
        if state.accelerator.is_main_process:
            print(line, flush=True)
        return not stop


def check_guard(c: GuardConfig, cfg) -> str:
    """One line naming the first invalid ``guard.*`` value, or ''."""
    if c.enabled and not cfg.train_attacks:
        return "guard.enabled=true needs a training threat (train_attacks) to probe at; it " \
               "guards adversarial training, not natural"
    if c.every < 0:
        return f"guard.every must be >= 0 (optimizer steps; 0 = epoch ends only), got {c.every}"
    if c.examples < 1:
        return f"guard.examples must be >= 1 (e.g. 256), got {c.examples}"
    if c.steps < 1:
        return f"guard.steps must be >= 1 (the probe's PGD steps, e.g. 10), got {c.steps}"
    if not 0 < c.threshold < 1:
        return f"guard.threshold must be in (0, 1) (an accuracy drop, e.g. 0.2), got {c.threshold}"
    if c.action not in ("rollback", "stop"):
        return f"guard.action='{c.action}' is not valid; choose one of: rollback, stop"
    if c.max_rollbacks < 0:
        return f"guard.max_rollbacks must be >= 0, got {c.max_rollbacks}"
    return ""


@register_addon("guard", GuardConfig, check_guard)
def build_guard(cfg: GuardConfig, state):
    """The guard when ``guard.enabled``."""
    if not cfg.enabled:
        return None
    if cfg.action == "rollback" and uses_deepspeed(state.accelerator):
        raise ConfigError("guard.action=rollback cannot restore DeepSpeed's partitioned "
                          "optimizer; use guard.action=stop, or DDP")
    return Guard(cfg, state)
