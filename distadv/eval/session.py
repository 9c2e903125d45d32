"""Load what an evaluation needs from a run directory: its config, the chosen checkpoint's
weights in a fresh model, and this rank's shard of the split."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Tuple

import torch

from ..data import build_splits
from ..data.base import IndexedImages
from ..engine import checkpoint as ck
from ..engine.build import model_for
from ..engine.loaders import eval_loaders
from ..engine.rundir import load_run_config, paths
from ..errors import ConfigError


def checkpoint_path(run_dir: Path, which: str) -> Path:
    """best -> best.safetensors, latest -> the full state, anything else: a weights file."""
    p = paths(run_dir)
    path = p["best"] if which == "best" else p["latest"] if which == "latest" else Path(which)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}; checkpoint= takes best, latest or a "
                          ".safetensors file (the run may not have finished an epoch)")
    return path


def load_weights_into(model: torch.nn.Module, path: Path, which: str) -> None:
    """Load safetensors (or the ``latest`` state, verified and with weights_only); a wrong
    architecture is refused with the missing and unexpected keys."""
    state = ck.load_state(path)["model"] if which == "latest" else ck.load_weights(path)
    ck.check_keys(model, state, path)
    model.load_state_dict(state)


def first_examples(splits, split: str, max_examples):
    """``splits`` with only the first ``max_examples`` of ``split`` (None: all of it); the
    caller's splits stay whole."""
    if max_examples is not None and max_examples < 1:
        raise ConfigError(f"max_examples must be >= 1, got {max_examples}; leave it out "
                          "to attack the whole split")
    if not max_examples:
        return splits
    splits = copy.copy(splits)
    part = getattr(splits, split)
    n = min(max_examples, len(part))
    setattr(splits, split, IndexedImages(part.images[:n], part.labels[:n]))
    return splits


def run_config(run_dir: Path):
    """The config of a run directory, or a one-line error if it is not one."""
    if not paths(Path(run_dir))["config"].is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); run= takes a "
                          "folder made by distadv/train.py, e.g. runs/demo")
    return load_run_config(Path(run_dir))


def load_run(ecfg, accelerator, splits=None) -> Tuple[object, torch.nn.Module, object, int, Path]:
    """(run config, model on the device in eval mode, this rank's loader, classes, checkpoint).
    ``splits``: the run's data, if the caller has it in memory already (the end of training)."""
    run_dir = Path(ecfg.run)
    run_cfg = run_config(run_dir)
    if ecfg.split not in ("test", "val"):
        raise ConfigError(f"split must be test or val, got '{ecfg.split}'")
    if ecfg.data_root:
        run_cfg.data.root = ecfg.data_root
    if ecfg.batch_size:
        run_cfg.data.eval_batch_size = ecfg.batch_size
    run_cfg.data.loader = "device"   # whole split resident, sharded by rank: any training loader
    splits = first_examples(splits or build_splits(run_cfg.data), ecfg.split, ecfg.max_examples)
    info = splits.info
    model = model_for(run_cfg, info)
    path = checkpoint_path(run_dir, ecfg.checkpoint)
    load_weights_into(model, path, ecfg.checkpoint)
    model.to(accelerator.device).eval()
    val_dl, test_dl = eval_loaders(splits, run_cfg.data, accelerator, run_cfg.seed)
    return run_cfg, model, test_dl if ecfg.split == "test" else val_dl, info.num_classes, path
