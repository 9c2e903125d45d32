"""run_evaluation(ecfg): load the run (or a model trained elsewhere: eval/external.py),
resolve the suite, run its attacks (resumable), audit, write ``<run>/eval/<suite>.json``
and print the table."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from omegaconf import OmegaConf

from ..engine.setup import make_accelerator
from .audit import audit_attacks, checks
from .session import load_run, run_config
from ..errors import ConfigError
from .external import (default_out, external_names, external_run_config, identity, is_external,
                       load_external)
from .factory import weights_digest
from ..files import file_sha256
from .store import EvalStore
from .suite_run import AttackPlan, is_randomised, run_attacks
from .suites import SuiteConfig, reference_threat, resolve


def run_evaluation(ecfg, accelerator=None, splits=None, show_table: bool = True) -> Dict:
    """Evaluate ``ecfg.run`` (or ``ecfg.model``, a model trained elsewhere) with ``ecfg.suite``;
    returns the results dict (every rank). The end of training passes its ``accelerator``
    and in-memory ``splits`` (same results as distadv/evaluate.py on the same checkpoint and
    examples: this is the same code)."""
    external = is_external(ecfg)       # model= (trained elsewhere) or run=; refuses both
    run_dir = None if external else Path(ecfg.run)
    suite = SuiteConfig(**OmegaConf.to_container(ecfg.suite, resolve=True))
    run_cfg = external_run_config(ecfg) if external else run_config(run_dir)
    names, skipped = (external_names(list(suite.attacks), ecfg) if external
                      else (list(suite.attacks), []))
    if suite.audit and not reference_threat(run_cfg, "linf"):
        raise ConfigError("the gradient-masking audit (suite.audit) runs at an L-inf threat; "
                          "this one has none: add suite.audit=false, or threat.norm=linf")
    attacks = resolve(names, run_cfg, suite, ecfg.seed)   # refuse before loading
    accelerator = accelerator or make_accelerator(run_cfg)
    main = accelerator.is_main_process
    log = print if main else (lambda *a, **k: None)
    load = load_external if external else load_run
    run_cfg, model, loader, num_classes, ckpt = load(ecfg, accelerator, splits)
    x0 = next(iter(loader))[0].to(accelerator.device)
    randomised = is_randomised(model, x0)
    repeats = suite.repeats if randomised else 1
    fingerprint = {"checkpoint": file_sha256(ckpt) if ckpt else weights_digest(model),
                   "split": ecfg.split, "max_examples": ecfg.max_examples, "seed": ecfg.seed,
                   "suite": OmegaConf.to_container(ecfg.suite, resolve=True),
                   **(identity(ecfg) if external else {})}
    out = Path(ecfg.out) if ecfg.out else (default_out(ecfg, suite.name) if external
                                           else run_dir / "eval" / f"{suite.name}.json")
    store = EvalStore(out, fingerprint)
    old = store.finished()
    if old is not None:
        log(f"{out} is already complete for this checkpoint and suite:\n{table(old)}")
        return old
    what = (f"{ecfg.model} ({ckpt or 'its own weights'}, data={ecfg.data}, threat "
            f"{fingerprint['threat']['norm']} eps {fingerprint['threat']['eps']:.6g})"
            if external else f"{run_dir} ({ecfg.checkpoint}, {ecfg.split} split)")
    log(f"distadv: evaluating {what} with suite "
        f"'{suite.name}' on {accelerator.num_processes} process(es); model is "
        f"{'randomised: ' + str(repeats) + ' repeats' if randomised else 'deterministic'}")
    if skipped:
        log(f"skipped (threat.norm={fingerprint['threat']['norm']}): {', '.join(skipped)}")
    save = store.save_partial if main else (lambda r: None)
    if suite.audit:
        for name, atk in audit_attacks(run_cfg, suite, randomised, ecfg.seed).items():
            attacks.setdefault(name, atk)
    res = run_attacks(model, loader, attacks, accelerator, num_classes,
                      AttackPlan(ecfg.seed, repeats, store.done(), save, log))
    results = {"run": None if external else str(run_dir),
               **(dict(identity(ecfg), skipped=skipped) if external else {}),
               "checkpoint": str(ckpt) if ckpt else "none", "split": ecfg.split,
               "suite": suite.name, "randomised": randomised, "repeats": repeats,
               "world_size": accelerator.num_processes,
               "count": next(iter(res.values()))["count"], "attacks": res,
               "audit": checks(run_cfg, suite, res, randomised) if suite.audit else None}
    if main:
        store.save(results)
        if show_table:
            print(table(results), flush=True)
        print(f"wrote {out}", flush=True)
    accelerator.wait_for_everyone()
    return results


def table(results: Dict) -> str:
    """The results as a markdown table (percent; mean ± std for randomised models), then the
    audit's PASS/FLAG lines."""
    lines = ["| attack | accuracy (%) | examples |", "|---|---:|---:|"]
    for name, r in results["attacks"].items():
        cell = f"{100 * r['acc']:.2f}" + (f" ± {100 * r['std']:.2f}" if len(r["runs"]) > 1 else "")
        lines.append(f"| {name} | {cell} | {r['count']} |")
    text = "\n".join(lines)
    notes = [f"{name}: {r['attack']}" for name, r in results["attacks"].items() if r.get("attack")]
    notes += [f"{name}: AutoAttack warns: {w}" for name, r in results["attacks"].items()
              for w in r.get("warnings", [])]
    if notes:
        text += "\n\n" + "\n".join(notes)
    if results.get("audit"):
        text += "\n\n| audit check | result | detail |\n|---|---|---|\n" + "\n".join(
            f"| {c['check']} | {c['status']} | {c['detail']} |" for c in results["audit"])
    return text
