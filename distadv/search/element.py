"""The SLURM job of one search trial: train the trial's run (the grid's element, resumable),
then measure its objectives and write them atomically to ``<run>/objectives.json``, the
file the driver reads and that marks the trial finished.

The robust accuracy is the per-example worst case of the official AutoAttack at the search
file's budget (``attack``) and the run's own PGD (``attack.also``: a budgeted AutoAttack with
EOT measured ABOVE the run's PGD-20 on every stochastic-LWTA digits trial, README), on the
first ``max_examples`` of the validation split, on the best checkpoint, through the same
``run_evaluation`` as distadv/evaluate.py (results in ``<run>/eval/search.json``, resumable).
The test split is never used to choose: the run's own results.json (its test numbers) is
written by training and not read here.
"""
from __future__ import annotations

import atexit
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

import submitit

from ..grid.element import TrainElement, _leave_without_teardown
from .space import AttackBudget

DONE = "objectives.json"
SUITE = "search"


class SearchElement(TrainElement):
    """Callable pickled by submitit: ``__call__(overrides)`` trains one trial's run and
    measures its objectives. Requeues (preemption, time limit) as ``TrainElement`` does."""

    def __init__(self, attack: AttackBudget):
        self.attack = asdict(attack) if not isinstance(attack, dict) else dict(attack)

    def __call__(self, overrides: List[str]) -> Optional[Dict]:
        """Train (or resume) the run, then evaluate it on every rank; rank 0 writes and
        returns the objectives. A failed run raises, so SLURM records the job as FAILED."""
        env = submitit.JobEnvironment()
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                              overwrite=True)
        from distadv.train import _close_process_group, main

        print(f"distadv: search trial job {env.job_id}, rank {env.global_rank}/{env.num_tasks}, "
              f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}", flush=True)
        run_dir = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("run_dir=")))
        try:
            # The process group stays up: the evaluation below shards over the same ranks.
            status = main(list(overrides), close_group=False)
            if status != 0:
                raise RuntimeError(f"training exited with status {status} (rank "
                                   f"{env.global_rank}); the reason is in this job's .err log")
            out = measure(run_dir, AttackBudget(**self.attack))
        finally:
            _close_process_group()
        atexit.register(_leave_without_teardown)
        return out if env.global_rank == 0 else None


def eval_overrides(run_dir: Path, b: AttackBudget) -> List[str]:
    """The evaluation of a trial: natural + the budgeted AutoAttack at the run's L-inf radius,
    validation split, best checkpoint."""
    return [f"run={run_dir}", "suite=autoattack", f"suite.name={SUITE}", "split=val",
            "checkpoint=best", f"suite.attacks=[{','.join(['natural', 'aa_linf', *b.also])}]",
            f"suite.aa_components=[{','.join(b.components)}]", f"suite.aa_steps={b.n_iter}",
            f"suite.aa_target_classes={b.target_classes}", f"suite.repeats={b.repeats}",
            f"max_examples={b.max_examples}", f"seed={b.seed}"]


def worst_case(attacks: Dict[str, Dict], names: List[str]) -> float:
    """Robust accuracy over several attacks: an example counts only if it survives every one
    (per-example verdicts of the first repeat), as AutoAttack combines its own components.
    With repeats > 1 (a randomised model), the lowest of the attacks' mean accuracies."""
    if any(len(attacks[n]["runs"]) > 1 for n in names):
        return min(attacks[n]["acc"] for n in names)
    verdicts = [attacks[n]["verdicts"] for n in names]
    return sum(all(v[i] == "1" for v in verdicts) for i in range(len(verdicts[0]))) / len(verdicts[0])


def measure(run_dir: Path, budget: AttackBudget) -> Dict:
    """Every objective of a finished run (robust_acc, clean_acc, params, flops), written by
    the main rank to ``<run>/objectives.json`` (atomic); returned on every rank."""
    from ..compose import load_eval_config
    from ..data import build_splits
    from ..engine.build import model_for
    from ..engine.checkpoint import write_json
    from ..eval.evaluate import run_evaluation
    from ..eval.session import run_config
    from .objectives import count_flops, count_params

    res = run_evaluation(load_eval_config(eval_overrides(run_dir, budget)), show_table=False)
    cfg = run_config(run_dir)
    info = build_splits(cfg.data).info
    model = model_for(cfg, info)
    side = info.image_size
    values = {"robust_acc": worst_case(res["attacks"], ["aa_linf", *budget.also]),
              "clean_acc": res["attacks"]["natural"]["acc"],
              "params": count_params(model),
              "flops": count_flops(model, (info.in_channels, side, side))}
    out = {"values": values, "examples": res["count"], "split": "val",
           "attack": res["attacks"]["aa_linf"].get("attack", ""),
           "per_attack": {k: v["acc"] for k, v in res["attacks"].items()},
           "eval": str(run_dir / "eval" / f"{SUITE}.json")}
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(run_dir / DONE, out)
    return out


def read_objectives(run_dir: Path) -> Optional[Dict]:
    """A trial's objectives.json, or None if it has none (yet)."""
    path = Path(run_dir) / DONE
    return json.loads(path.read_text()) if path.is_file() else None
