"""The end-of-run cross-check: no robustness number is printed unchecked.

After the final test, the best checkpoint is attacked on the first ``autoattack.max_examples``
test examples with the official AutoAttack (default: APGD-CE then APGD-T at the standard
budgets), next to the run's own PGD of the same norm on the same examples: L-inf always, L2
too for L2-trained runs. A PGD accuracy above AutoAttack's by more than
``autoattack.tolerance`` (1.5 points) is a flag: PGD is being fooled, typically by gradient
masking, and AutoAttack is the number to quote.

It is ``distadv/evaluate.py`` itself (``run_evaluation``) with the suite ``check_suite``
builds, so ``python distadv/evaluate.py run=R suite=autoattack
suite.attacks=[pgd_linf,aa_linf] suite.aa_components=[apgd-ce,apgd-t] suite.repeats=1
max_examples=1000`` reproduces its numbers exactly; results go to ``<run>/eval/autoattack_check.json``
(resumable like every evaluation).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List

from omegaconf import OmegaConf

from .config import EvalConfig
from .evaluate import run_evaluation
from .suites import SuiteConfig, reference_threat

NORM_LABEL = {"linf": "L-inf", "l2": "L2"}


def checked_norms(cfg) -> List[str]:
    """L-inf always; L2 as well when the run trains against an L2 threat (each needs a
    multi-step evaluation attack of that norm to compare with)."""
    norms = ["linf"] + (["l2"] if any(t.norm == "l2" for t in cfg.train_attacks.values()) else [])
    return [n for n in norms if reference_threat(cfg, n)]


def check_suite(cfg) -> SuiteConfig:
    """The suite of the check: for each checked norm, the run's PGD and AutoAttack."""
    a = cfg.autoattack
    names = [x for n in checked_norms(cfg) for x in (reference_threat(cfg, n)[0], f"aa_{n}")]
    return SuiteConfig(name="autoattack_check", attacks=names, aa_version=a.version,
                       aa_components=list(a.attacks) if a.attacks is not None else None,
                       aa_steps=a.steps, aa_target_classes=a.target_classes, repeats=1)


def gaps_of(cfg, attacks: Dict[str, Dict]) -> Dict[str, float]:
    """PGD minus AutoAttack accuracy on the same examples, per checked norm ('aa_<norm>')."""
    return {f"aa_{n}": attacks[reference_threat(cfg, n)[0]]["acc"] - attacks[f"aa_{n}"]["acc"]
            for n in checked_norms(cfg)}


def flags_of(cfg, attacks: Dict[str, Dict]) -> List[Dict]:
    """One flag per norm where PGD overstates robustness beyond the tolerance, and one per
    warning of the package's own checks (e.g. zero gradients: then AutoAttack's gradient-based
    attacks are fooled too, and neither number can be trusted), and one per norm when the
    check ran below the package's budgets."""
    out = []
    a = cfg.autoattack
    cut = [f"autoattack.{k}={a[k]}" for k in ("steps", "target_classes") if a[k] is not None]
    gaps = gaps_of(cfg, attacks)
    for norm in checked_norms(cfg):
        ref, aa = reference_threat(cfg, norm)[0], f"aa_{norm}"
        gap = gaps[aa]
        if cut:                         # a weaker check proves less: say so wherever it shows
            out.append({"metric": ref, "norm": norm, "gap": None,
                        "message": f"AutoAttack check below the package's budgets ({', '.join(cut)}): "
                                   "a weak check; rerun without them for a number to quote"})
        if gap > cfg.autoattack.tolerance:
            out.append({"metric": ref, "norm": norm, "gap": gap, "message":
                        f"PGD-{NORM_LABEL[norm]} overstates robustness by {100 * gap:.1f} points "
                        "(gradient masking?); quote AutoAttack"})
        for w in attacks[aa].get("warnings", []):
            out.append({"metric": ref, "norm": norm, "gap": gap, "message":
                        f"AutoAttack ({NORM_LABEL[norm]}) warns: {w}"
                        " (neither PGD nor AutoAttack can be trusted here)"})
    return out


def crosscheck(cfg, run_dir: Path, accelerator, splits) -> Dict:
    """Run the check on every rank; returns {'examples', 'attacks' ({name: acc}), 'attack'
    (what ran), 'warnings', 'flags', 'seconds'}. Cost: AutoAttack on max_examples images
    (APGD-CE: 100 steps; APGD-T: 9 x 100 steps on the examples still standing)."""
    start = time.perf_counter()
    ecfg = OmegaConf.structured(EvalConfig(
        run=str(run_dir), suite=check_suite(cfg), checkpoint="best", split="test",
        max_examples=cfg.autoattack.max_examples, seed=0,
        out=str(Path(run_dir) / "eval" / "autoattack_check.json")))
    res = run_evaluation(ecfg, accelerator, splits, show_table=False)
    attacks = res["attacks"]
    return {"examples": res["count"], "attacks": {k: v["acc"] for k, v in attacks.items()},
            "gaps": gaps_of(cfg, attacks),
            "attack": next(v["attack"] for k, v in attacks.items() if k.startswith("aa_")),
            "warnings": sorted({w for v in attacks.values() for w in v.get("warnings", [])}),
            "flags": flags_of(cfg, attacks), "seconds": time.perf_counter() - start}
