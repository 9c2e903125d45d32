"""The run's experiment tracking: one interface fanned out to the backends of ``log.trackers``.

TensorBoard stays distadv's own SummaryWriter (``engine/tracking.py``: purge_step on resume,
the adversarial image grid, text and HParams, all in ``<run>/tb``). MLflow
(``engine/mlflow_backend.py``), W&B and Aim are Accelerate's tracker classes
(``accelerate.tracking``), constructed here on rank 0 rather than through
``Accelerator(log_with=...)``: the Accelerator exists before the run directory and its resume
state are known, and a resumed run must hand each tracker its stored run id and learn which
epochs it already holds. Each backend gets every scalar TensorBoard gets, the resolved config
(flattened to dotted keys) once, and the final metrics (what HParams gets).

Resume: ``<run>/trackers.json`` (written atomically) keeps each backend's run id, so a second
session continues the same MLflow / W&B / Aim run; epochs a backend already holds are not
logged again, and epochs it lacks (a tracker added on resume) are replayed from the history.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Dict, List

from omegaconf import OmegaConf

from ..errors import ConfigError

# name -> (module imported, how to install it); the run refuses a missing one before writing.
BACKENDS = {
    "tensorboard": ("tensorboard", "pip install tensorboard"),
    "mlflow": ("mlflow", "pip install mlflow-skinny (or pip install -e '.[trackers]')"),
    "wandb": ("wandb", "pip install wandb"),
    "aim": ("aim", "pip install aim"),
}


def check_tracker_names(names: List[str]) -> None:
    """Refuse an unknown or repeated name in ``log.trackers`` (config validation: names only;
    whether a package is installed is checked by the run, on the machine that logs)."""
    seen = set()
    for n in names:
        if n not in BACKENDS:
            raise ConfigError(f"log.trackers: unknown tracker '{n}'; choose from: "
                              f"{', '.join(BACKENDS)} (e.g. 'log.trackers=[tensorboard,mlflow]')")
        if n in seen:
            raise ConfigError(f"log.trackers lists '{n}' twice; name each tracker once")
        seen.add(n)


def active_names(log) -> List[str]:
    """The backends a run logs to: ``log.trackers``, less tensorboard when
    ``log.tensorboard=false`` (the older switch, still used by commands and tools)."""
    return [n for n in log.trackers if n != "tensorboard" or log.tensorboard]


def check_installed(log) -> None:
    """Refuse a tracker whose package is not importable here, before the run writes anything.
    Called by every rank (a spec lookup, no import), so all stop together with exit 2."""
    for n in active_names(log):
        module, install = BACKENDS[n]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"log.trackers: {n} is not installed here; {install}, or remove "
                              f"{n} from log.trackers")


def flat_config(cfg) -> Dict[str, object]:
    """The resolved config as ``{"optim.lr": 0.01, ...}``; lists become strings (tracker
    params are scalars)."""
    out: Dict[str, object] = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = str(node) if isinstance(node, list) else node

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return out


class AccelerateBackend:
    """One of Accelerate's trackers (a started ``accelerate.tracking.GeneralTracker``) behind
    the run's interface. ``done``: the last epoch the tracker's run already holds; scalars of
    epochs up to it are skipped, so no epoch is logged twice."""

    def __init__(self, tracker, config: Dict[str, object], done: int = 0):
        self.tracker, self.done = tracker, done
        if config:
            tracker.store_init_configuration(config)

    def scalars(self, step: int, values: Dict[str, float]) -> None:
        """Log ``{tag: value}`` at ``step`` (the epoch), unless the run already holds it."""
        if step > self.done:
            self.tracker.log(values, step=step)
            self.done = step

    def text(self, tag: str, step: int, line: str) -> None:
        """TensorBoard only (the guard's lines are in progress.json too)."""

    def adversarial_grid(self, step: int, images) -> None:
        """TensorBoard only."""

    def hparams(self, hparams: Dict[str, object], metrics: Dict[str, float]) -> None:
        """The final metrics (the config went in at the start)."""
        self.tracker.log(metrics)

    def close(self) -> None:
        """End the tracker's run (Accelerate's ``finish``)."""
        self.tracker.finish()


def _wandb(run_dir: Path, name: str, experiment: str, ids: dict, config) -> AccelerateBackend:
    """W&B: ``wandb.init(project=experiment, name=..., dir=<run>, id=...)``; a stored id
    resumes that run (W&B itself drops steps below the run's current one)."""
    from accelerate.tracking import WandBTracker

    prev = ids.get("wandb")
    tracker = WandBTracker(experiment, name=name, dir=str(run_dir),
                           **({"id": prev, "resume": "allow"} if prev else {}))
    tracker.start()
    ids["wandb"] = tracker.run.id
    return AccelerateBackend(tracker, config)


def _aim(run_dir: Path, name: str, experiment: str, ids: dict, config) -> AccelerateBackend:
    """Aim: a ``Run`` in the repo ``<run>`` (``<run>/.aim``); a stored hash resumes that run."""
    from accelerate.tracking import AimTracker

    prev = ids.get("aim")
    tracker = AimTracker(name, logging_dir=str(run_dir), experiment=experiment,
                         **({"run_hash": prev} if prev else {}))
    tracker.start()
    ids["aim"] = tracker.writer.hash
    return AccelerateBackend(tracker, config)


class Tracking:
    """The run's trackers; every call goes to each backend. Empty on ranks other than 0."""

    def __init__(self, backends: list):
        self.backends = backends

    def scalars(self, step: int, values: Dict[str, float]) -> None:
        """Log ``{tag: value}`` at ``step`` (the epoch) to every backend."""
        for b in self.backends:
            b.scalars(step, values)

    def text(self, tag: str, step: int, line: str) -> None:
        """A line of text under ``tag`` (TensorBoard's Text tab)."""
        for b in self.backends:
            b.text(tag, step, line)

    def adversarial_grid(self, step: int, images) -> None:
        """Clean / adversarial / perturbation rows (TensorBoard)."""
        for b in self.backends:
            b.adversarial_grid(step, images)

    def hparams(self, hparams: Dict[str, object], metrics: Dict[str, float]) -> None:
        """The run's hyperparameters and final metrics."""
        for b in self.backends:
            b.hparams(hparams, metrics)

    def close(self) -> None:
        """Flush and end every backend's run; a second call does nothing."""
        backends, self.backends = self.backends, []
        for b in backends:
            b.close()


def open_tracking(cfg, p: Dict[str, Path], main: bool, start_epoch: int, history: List[dict]) -> Tracking:
    """Start the run's backends on rank 0 (``p``: the run directory's paths). On a resume, each
    non-TensorBoard backend continues its stored run and gets the history's epochs it lacks."""
    if not main:
        return Tracking([])
    from .checkpoint import write_json
    from .tracking import TensorBoard

    run_dir = p["config"].parent
    name, experiment = run_dir.name, cfg.log.experiment or run_dir.name
    ids = json.loads(p["trackers"].read_text()) if p["trackers"].is_file() else {}
    before = json.dumps(ids, sort_keys=True)
    config = flat_config(cfg)
    backends = []
    for n in active_names(cfg.log):
        if n == "tensorboard":
            # Steps are 1-based epochs: purge from the first epoch this session logs (purging
            # from start_epoch dropped the checkpoint's own epoch from the curves).
            backends.append(TensorBoard(p["tb"], True, purge_step=start_epoch + 1 if start_epoch else None))
            continue
        if n == "mlflow":
            from .mlflow_backend import mlflow_backend
            b = mlflow_backend(run_dir, name, experiment, cfg.log.mlflow_uri, ids, config)
        else:
            resumed = n in ids
            b = (_wandb if n == "wandb" else _aim)(run_dir, name, experiment, ids, config)
            b.done = start_epoch if resumed else 0   # W&B / Aim: assumed complete to the checkpoint
        for r in history:                            # epochs this backend's run lacks
            b.scalars(r["epoch"], {k: v for k, v in r.items() if k != "epoch"})
        backends.append(b)
    if json.dumps(ids, sort_keys=True) != before:
        write_json(p["trackers"], ids)
    return Tracking(backends)
