"""Evaluate a model trained elsewhere: ``model=MODULE:FACTORY checkpoint=FILE data=NAME``.

There is no run config, so one is made: the data set (``data=``, ``data_root=``) and the
threat (``threat.norm``, ``threat.eps``; default RobustBench's 8/255 L-inf, 0.5 L2) become
the ``eval_attacks`` the suites resolve against: for linf ``pgd_linf`` (10 steps of eps/4,
random start) and ``fgsm``; for l2 ``pgd_l2``. AutoAttack, EOT, Square and the audit take
their radius from these, as they do from a run's. A suite's attacks of the other norm are
skipped (and said so). Randomised models are detected by measurement, as for runs.
"""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Tuple

import torch
from omegaconf import OmegaConf

from ..config import RunConfig, ThreatConfig
from ..data import SHAPES, build_splits
from ..engine.loaders import eval_loaders
from ..errors import ConfigError
from .config import ExternalThreat
from .factory import build_model, load_checkpoint
from .session import first_examples
from .suites import valid_names

DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5}       # RobustBench's CIFAR threat models
OTHER = {"linf": "l2", "l2": "linf"}
USAGE = ("model=package.module:factory checkpoint=FILE.pt data=cifar10 (a model trained "
         "elsewhere)")


def is_external(ecfg) -> bool:
    """True for ``model=``, False for ``run=``; refuses both, neither, and keys that belong
    to the other kind, before anything is loaded."""
    if ecfg.run and ecfg.model:
        raise ConfigError(f"give run= or model=, not both (run={ecfg.run}, model={ecfg.model})")
    if not ecfg.run and not ecfg.model:
        raise ConfigError(f"give what to evaluate: run=runs/<name> (a distadv run) or {USAGE}")
    if ecfg.run:
        threat = ecfg.threat.norm != ExternalThreat.norm or ecfg.threat.eps is not None
        given = [k for k, v in (("data", ecfg.data), ("threat.*", threat)) if v]
        if given:
            raise ConfigError(f"{', '.join(given)}= set with run=: a run's data and threat come "
                              "from its config (data_root= moves its data); they are for model=")
        return False
    if ecfg.checkpoint in ("best", "latest"):
        raise ConfigError(f"model= needs checkpoint=FILE (.pt, .pth or .safetensors); "
                          f"'{ecfg.checkpoint}' names a run's checkpoint. checkpoint=none if "
                          "the factory loads its own weights")
    if ecfg.data not in SHAPES:
        raise ConfigError(f"model= needs data=NAME, got {ecfg.data!r}; valid: "
                          f"{', '.join(sorted(SHAPES))}")
    if ecfg.split != "test":
        raise ConfigError(f"split={ecfg.split}: a model trained elsewhere has no validation "
                          "split known to distadv; leave split= out (test)")
    threat_of(ecfg)
    return True


def threat_of(ecfg) -> Tuple[str, float]:
    """(norm, eps) of ``threat.*``, eps defaulting to RobustBench's for the norm."""
    norm, eps = ecfg.threat.norm, ecfg.threat.eps
    if norm not in DEFAULT_EPS:
        raise ConfigError(f"threat.norm='{norm}' is not valid; choose one of: linf, l2")
    eps = DEFAULT_EPS[norm] if eps is None else eps
    if not 0 < eps <= (1 if norm == "linf" else 1e3):
        raise ConfigError(f"threat.eps must be > 0 (pixel units in [0, 1], e.g. 0.031 = 8/255), "
                          f"got {eps}")
    return norm, float(eps)


def threat_attacks(norm: str, eps: float) -> Dict[str, ThreatConfig]:
    """The eval_attacks of an external model: the seed's PGD (10 steps of eps/4) and FGSM."""
    pgd = ThreatConfig(norm=norm, eps=eps, alpha=eps / 4, steps=10, random_start=True)
    if norm == "l2":
        return {"pgd_l2": pgd}
    return {"pgd_linf": pgd, "fgsm": ThreatConfig(norm="linf", eps=eps, alpha=eps, steps=1,
                                                  random_start=False)}


def external_run_config(ecfg):
    """A RunConfig standing in for the missing run: data set, batch size and eval_attacks."""
    norm, eps = threat_of(ecfg)
    cfg = OmegaConf.structured(RunConfig)
    cfg.data.name, cfg.data.root = ecfg.data, ecfg.data_root
    cfg.data.verify_checksums = ecfg.verify_checksums
    cfg.data.loader = "device"      # the test split resident, sharded by rank
    cfg.data.val_size = 1           # build_splits holds one out; never evaluated
    cfg.data.eval_batch_size = ecfg.batch_size or cfg.data.eval_batch_size
    cfg.eval_attacks = threat_attacks(norm, eps)
    return cfg


def external_names(names: List[str], ecfg) -> Tuple[List[str], List[str]]:
    """(the suite's attacks for this threat, those skipped as of the other norm); names
    valid for neither are kept, for ``resolve`` to refuse with the valid list."""
    norm, eps = threat_of(ecfg)
    other = valid_names(SimpleNamespace(eval_attacks=threat_attacks(OTHER[norm], eps)))
    mine = valid_names(SimpleNamespace(eval_attacks=threat_attacks(norm, eps)))
    skipped = [n for n in names if n not in mine and n in other]
    kept = [n for n in names if n not in skipped]
    if not kept:
        raise ConfigError(f"no attack of the suite fits threat.norm={norm} (skipped: "
                          f"{', '.join(skipped)}); valid: {', '.join(mine)}")
    return kept, skipped


def identity(ecfg) -> Dict:
    """What, besides the checkpoint's hash, tells one external evaluation from another."""
    norm, eps = threat_of(ecfg)
    return {"model": ecfg.model, "data": ecfg.data, "threat": {"norm": norm, "eps": eps}}


def default_out(ecfg, suite: str) -> Path:
    """``runs/external/<factory>-<checkpoint stem>/eval/<suite>.json`` (a safe name)."""
    stem = "own-weights" if ecfg.checkpoint == "none" else Path(ecfg.checkpoint).stem
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{ecfg.model.rpartition(':')[2]}-{stem}")
    return Path("runs") / "external" / name / "eval" / f"{suite}.json"


def load_external(ecfg, accelerator,
                  splits=None) -> Tuple[object, torch.nn.Module, object, int, Optional[Path]]:
    """(stand-in run config, model on the device in eval mode, this rank's test loader,
    classes, checkpoint path or None); the model is built and loaded before the data is read."""
    run_cfg = external_run_config(ecfg)
    model = build_model(ecfg.model)
    path = None if ecfg.checkpoint == "none" else Path(ecfg.checkpoint)
    if path is not None:
        load_checkpoint(model, path)
    splits = first_examples(splits or build_splits(run_cfg.data), "test", ecfg.max_examples)
    info = splits.info
    model.to(accelerator.device).eval()
    side = info.image_size
    probe = torch.rand(1, info.in_channels, side, side, device=accelerator.device)
    try:
        with torch.no_grad():
            shape = tuple(model(probe).shape)
    except RuntimeError as exc:
        raise ConfigError(f"{ecfg.model} fails on a {tuple(probe.shape)} batch of data={ecfg.data} "
                          f"({str(exc).splitlines()[0][:160]}); is it the model for this data "
                          "set?") from None
    if shape != (1, info.num_classes):
        raise ConfigError(f"{ecfg.model} returns {shape} for one image; data={ecfg.data} needs "
                          f"logits of shape (1, {info.num_classes})")
    _, test_dl = eval_loaders(splits, run_cfg.data, accelerator, run_cfg.seed)
    return run_cfg, model, test_dl, info.num_classes, path
