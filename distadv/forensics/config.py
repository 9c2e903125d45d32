"""The schema of ``tools/forensics.py`` (``ForensicsConfig``) and its ``key=value`` parsing:
an unknown key or a wrong type is one ConfigError line (the same diagnosis as the recipes)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from ..errors import ConfigError

AUTOATTACK_NAMES = ("apgd_ce_linf", "apgd_ce_l2", "square_linf", "square_l2")


@dataclass
class DetectorConfig:
    """The detectors: a small CNN over fixed high-pass residuals, and the same CNN on the
    raw pixels as the baseline (what the residual filters add)."""

    epochs: int = 30                   # passes over the detector's training split
    lr: float = 0.001                  # Adam learning rate
    batch_size: int = 64               # training batch (rank 0 trains; the set is small)
    width: int = 32                    # channels of the CNN's convolutions
    seed: int = 0                      # initialisation and batch order


@dataclass
class AdaptiveConfig:
    """PGD against the classifier and the detector together, at the run's L-inf radius:
    maximise min(CW margin, margin) + weight * log p_detector(clean)."""

    weights: List[float] = field(default_factory=lambda: [1.0, 10.0])
        # the detector term's weight; one attack per weight (the trade-off is reported)
    steps: int = 50                    # PGD iterations (the run's PGD-L-inf step size)
    margin: float = 2.0                # the classifier term stops pulling past this CW margin
    alpha: Optional[float] = None      # step size; null: the run's pgd_linf alpha


@dataclass
class ForensicsConfig:
    """Which run, which attacks, how many examples, and where the results go."""

    run: Optional[str] = None          # a run directory made by distadv/train.py (runs/<name>)
    checkpoint: str = "best"           # best | latest | a .safetensors weights file
    attacks: List[str] = field(default_factory=lambda: [
        "fgsm", "pgd_linf", "pgd_l2", "apgd_ce_linf", "square_linf"])
        # the run's eval_attacks by name, and apgd_ce_linf/_l2, square_linf/_l2 (the official
        # AutoAttack's APGD-CE / Square at the radius of the run's PGD of that norm)
    max_examples: Optional[int] = 1000  # first N source images of each split (null: all)
    aa_steps: Optional[int] = None     # APGD iterations (null: the package's 100)
    square_queries: Optional[int] = None  # Square queries (null: the package's 5000)
    batch_size: Optional[int] = None   # global attack batch; null: the run's eval_batch_size
    seed: int = 0                      # attack randomness
    fpr: float = 0.05                  # false-positive rate on clean test images that sets
                                       # the detection threshold
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    out: Optional[str] = None          # output folder; default <run>/forensics
    data_root: Optional[str] = None    # where the data lives now, if not where it was trained


def load_forensics_config(overrides: Sequence[str]):
    """``key=value`` overrides on the schema -> a typed DictConfig; bad keys, types or values
    are one ConfigError line naming the key and the fix."""
    from omegaconf import OmegaConf

    from ..compose import _diagnose, _first_line

    base = OmegaConf.structured(ForensicsConfig)
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except Exception as exc:  # OmegaConf raises several types; all become one line
        raise ConfigError(_diagnose(overrides, base) or _first_line(exc)) from None
    check(cfg)
    return cfg


def check(cfg) -> None:
    """Refuse values no forensics run can use (before anything is loaded)."""
    if not cfg.run:
        raise ConfigError("run= is required: a folder made by distadv/train.py, e.g. "
                          "python tools/forensics.py run=runs/demo")
    if not cfg.attacks or len(set(cfg.attacks)) != len(cfg.attacks):
        raise ConfigError(f"attacks={list(cfg.attacks)} must list distinct attacks, at least one")
    if "clean" in cfg.attacks:
        raise ConfigError("attacks= lists attacks only; 'clean' is always the detector's class 0")
    if cfg.max_examples is not None and cfg.max_examples < 2:
        raise ConfigError(f"max_examples must be >= 2 (or null: all), got {cfg.max_examples}")
    if not 0 < cfg.fpr < 1:
        raise ConfigError(f"fpr must be in (0, 1), got {cfg.fpr}; 0.05 is a 5% false-positive rate")
    d, a = cfg.detector, cfg.adaptive
    if d.epochs < 1 or d.lr <= 0 or d.batch_size < 1 or d.width < 1:
        raise ConfigError("detector.epochs, .batch_size and .width must be >= 1 and detector.lr "
                          f"> 0; got {plain(d)}")
    if a.steps < 1 or any(w < 0 for w in a.weights) or (a.alpha is not None and a.alpha <= 0):
        raise ConfigError("adaptive.steps must be >= 1, adaptive.weights >= 0 and adaptive.alpha "
                          f"> 0 (or null); got {plain(a)}")


def plain(node) -> dict:
    """A config node as a plain dict (for error lines)."""
    from omegaconf import OmegaConf
    return OmegaConf.to_container(node, resolve=True)
