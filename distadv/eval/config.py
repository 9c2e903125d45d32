"""The schema of ``distadv/evaluate.py``'s config (``recipes/evaluate.yaml`` + a suite)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .suites import SuiteConfig


@dataclass
class ExternalThreat:
    """The threat of a model trained elsewhere (``model=``); a run has its eval_attacks."""

    norm: str = "linf"                  # linf | l2
    eps: Optional[float] = None         # radius in [0, 1] pixels; null: 8/255 (linf), 0.5 (l2)


@dataclass
class EvalConfig:
    """What to evaluate, on which split, with which suite, and where the results go.

    Either a distadv run (``run=``) or a model trained elsewhere (``model=MODULE:FACTORY``
    with ``checkpoint=FILE``, ``data=`` and ``threat.*``; distadv/eval/external.py)."""

    run: Optional[str] = None           # a run directory (runs/<name>)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    checkpoint: str = "best"            # best | latest | a .safetensors path; with model=:
                                        # a .pt/.pth/.safetensors file, or none (the factory's own)
    split: str = "test"                 # test | val (runs only)
    max_examples: Optional[int] = None  # first N examples of the split (quick checks)
    batch_size: Optional[int] = None    # global; default: the run's data.eval_batch_size (256)
    seed: int = 0                       # attack randomness
    out: Optional[str] = None           # default <run>/eval/<suite>.json, or for model=:
                                        # runs/external/<factory>-<checkpoint stem>/eval/<suite>.json
    data_root: Optional[str] = None     # where the data lives now, if not where it was trained
    model: Optional[str] = None         # a model trained elsewhere (distadv/eval/external.py):
                                        # package.module:factory, importable from the current
                                        # directory or sys.path; returns an nn.Module on [0, 1]
    data: Optional[str] = None          # cifar10 | cifar100 | fashion_mnist | digits
    verify_checksums: bool = True       # CIFAR md5s (the tests' tiny archives: false)
    threat: ExternalThreat = field(default_factory=ExternalThreat)
