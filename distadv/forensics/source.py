"""The run a forensics study attacks: its config, its model (the chosen checkpoint) and this
rank's shards of its validation and test splits, loaded as distadv/eval/session.py does."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict

from torch import nn

from ..data import build_splits
from ..engine.build import model_for
from ..engine.loaders import eval_loaders
from ..errors import ConfigError
from ..eval.session import checkpoint_path, first_examples, load_weights_into, run_config

# The detector trains on images made from the run's validation split and is tested on images
# made from its test split: two disjoint sets of source images (the validation split is held
# out of the training set; the test set is separate from both).
DETECTOR_SPLITS = {"train": "val", "test": "test"}


@dataclass
class Source:
    """What the study needs from the run. ``loaders``: detector split -> this rank's loader."""

    run_cfg: object
    model: nn.Module
    loaders: Dict[str, object]
    num_classes: int
    checkpoint: Path


def open_run(fcfg, accelerator) -> Source:
    """Load ``fcfg.run``: a folder that is not a run, or a missing checkpoint, is one
    ConfigError line. The model is on the accelerator's device, in eval mode."""
    run_dir = Path(fcfg.run)
    if not run_dir.is_dir():
        raise ConfigError(f"run={run_dir} does not exist; run= takes a folder made by "
                          "distadv/train.py, e.g. runs/demo")
    run_cfg = run_config(run_dir)              # not a run: one line
    path = checkpoint_path(run_dir, fcfg.checkpoint)
    if fcfg.data_root:
        run_cfg.data.root = fcfg.data_root
    if fcfg.batch_size:
        run_cfg.data.eval_batch_size = fcfg.batch_size
    run_cfg.data.loader = "device"   # whole split resident, sharded by rank: any training loader
    splits = build_splits(run_cfg.data)
    for split in DETECTOR_SPLITS.values():
        splits = first_examples(splits, split, fcfg.max_examples)
    model = model_for(run_cfg, splits.info)
    load_weights_into(model, path, fcfg.checkpoint)
    model.to(accelerator.device).eval()
    val_dl, test_dl = eval_loaders(splits, run_cfg.data, accelerator, run_cfg.seed)
    return Source(run_cfg, model, {"train": val_dl, "test": test_dl}, splits.info.num_classes, path)
