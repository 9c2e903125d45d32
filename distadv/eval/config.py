"""The schema of ``distadv/evaluate.py``'s config (``recipes/evaluate.yaml`` + a suite)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from .suites import SuiteConfig


@dataclass
class EvalConfig:
    """What to evaluate, on which split, with which suite, and where the results go."""

    run: str = MISSING                  # a run directory (runs/<name>)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    checkpoint: str = "best"            # best | latest | a .safetensors path
    split: str = "test"                 # test | val
    max_examples: Optional[int] = None  # first N examples of the split (quick checks)
    batch_size: Optional[int] = None    # global; default: the run's data.eval_batch_size
    seed: int = 0                       # attack randomness
    out: Optional[str] = None           # default <run>/eval/<suite>.json
    data_root: Optional[str] = None     # where the data lives now, if not where it was trained
