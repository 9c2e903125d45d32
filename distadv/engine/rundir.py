"""The run directory: where it is, whether it is new, resumable or finished, and its layout.

runs/<name>/config.yaml                 resolved config (written once, by rank 0)
runs/<name>/checkpoints/latest          full training state, rewritten atomically every epoch
runs/<name>/checkpoints/previous        the state before it (kept until latest is safely on disk)
runs/<name>/checkpoints/best.safetensors best validation-robust weights
runs/<name>/tb/                         TensorBoard events
runs/<name>/mlruns/                     MLflow file store (log.trackers with mlflow, no URI set)
runs/<name>/trackers.json               the MLflow / W&B / Aim run ids a resume continues
runs/<name>/progress.json               per-epoch history + best so far (for status and reports)
runs/<name>/results.json                test metrics of the best checkpoint
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

from omegaconf import DictConfig, OmegaConf

from ..config import RESUMABLE_SECTIONS, RunConfig
from ..errors import RunDirError


def run_dir_of(cfg: DictConfig) -> Path:
    """``run_dir`` if set, else ``<runs_root>/<name or recipe>`` (no timestamp: all ranks of a
    launch, and every resume, agree on it)."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return Path(cfg.runs_root) / (cfg.name or cfg.recipe)


def paths(run_dir: Path) -> Dict[str, Path]:
    """The files of a run directory."""
    ck = run_dir / "checkpoints"
    return {"config": run_dir / "config.yaml", "checkpoints": ck, "latest": ck / "latest",
            "previous": ck / "previous",
            "best": ck / "best.safetensors", "tb": run_dir / "tb",
            "results": run_dir / "results.json", "progress": run_dir / "progress.json",
            "trackers": run_dir / "trackers.json"}


def load_run_config(run_dir: Path) -> DictConfig:
    """A run's saved config.yaml on top of today's schema: keys added since the run was
    trained (e.g. a threat's ``eot_samples``) get their defaults instead of failing."""
    return OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(paths(run_dir)["config"]))


def _experiment(cfg: DictConfig) -> dict:
    d = OmegaConf.to_container(cfg, resolve=True)
    for k in RESUMABLE_SECTIONS:
        d.pop(k, None)
    return d


def _diff(a, b, prefix="") -> list:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def inspect(run_dir: Path, cfg: DictConfig) -> Tuple[str, Path]:
    """'new', 'resume' or 'finished'. Read-only, so every rank can call it.

    A directory that holds another experiment (any difference outside runtime/log) is
    refused with the differences listed; nothing in it is touched.
    """
    p = paths(run_dir)
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return "new", run_dir
    if not p["config"].is_file():
        raise RunDirError(f"{run_dir} exists and is not a distadv run (no config.yaml); "
                          "choose another run_dir= or name=, or remove it")
    old = OmegaConf.to_container(load_run_config(run_dir), resolve=True)
    new = _experiment(cfg)
    for k in RESUMABLE_SECTIONS:
        old.pop(k, None)
    changes = _diff(old, new)
    if changes:
        shown = "; ".join(changes[:5]) + (" ..." if len(changes) > 5 else "")
        raise RunDirError(f"{run_dir} holds a different run (recipe '{old.get('recipe')}'; "
                          f"{shown}); nothing was changed. Pick a new name=/run_dir=, or "
                          "rerun with the same config to resume")
    if p["results"].is_file():
        return "finished", run_dir
    resumable = p["latest"].is_file() or p["previous"].is_file()  # killed between renames
    return "resume" if resumable else "new", run_dir
