"""Run a suite's attacks through the sharded runner, one attack at a time: seeded per attack
(a resumed evaluation draws what an uninterrupted one would), repeated for randomised models,
and saved after each attack."""
from __future__ import annotations

import statistics
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch
from torch import nn

from ..attacks.mode import is_randomised  # noqa: F401  (evaluate.py, tests)
from .runner import EvalOptions, evaluate


def attack_seed(seed: int, name: str, repeat: int, rank: int) -> int:
    """The RNG seed of one attack's repeat on one rank (stable across processes and resumes)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode()) * 101 + repeat * 7_919 + rank) % 2**63


@dataclass
class AttackPlan:
    """How a suite's attacks run: the evaluation ``seed``, ``repeats`` per attack (randomised
    models), results already ``done`` (not recomputed), ``on_done(all results)`` after each new
    attack (rank 0 saves), and where progress lines go (``log``)."""

    seed: int = 0
    repeats: int = 1
    done: Dict[str, Dict] = field(default_factory=dict)
    on_done: Callable[[Dict[str, Dict]], None] = lambda results: None
    log: Callable[..., None] = print


def run_attacks(model: nn.Module, loader, attacks: Dict[str, Optional[Callable]], accelerator,
                num_classes: int, plan: AttackPlan) -> Dict[str, Dict]:
    """Accuracy per attack: {'acc', 'std', 'runs', 'count', 'verdicts'} (verdicts: '0'/'1' per
    example in index order, of the first repeat), plus 'attack' and 'warnings' for AutoAttack,
    as ``plan`` says (seed, repeats, resumed results, saving, logging)."""
    seed, repeats, on_done, log = plan.seed, plan.repeats, plan.on_done, plan.log
    results = dict(plan.done)
    for name, atk in attacks.items():
        if name in results:
            log(f"{name}: done before, not recomputed ({100 * results[name]['acc']:.2f}%)")
            continue
        runs, count, first = [], 0, {}
        for r in range(repeats):
            torch.manual_seed(attack_seed(seed, name, r, accelerator.process_index))
            col = "natural" if atk is None else name
            metrics, _ = evaluate(model, loader, {} if atk is None else {name: atk}, accelerator,
                                  num_classes, EvalOptions(verdicts=first if r == 0 else None))
            runs.append(metrics[col])
            count = metrics["count"]
        results[name] = {"acc": statistics.fmean(runs),
                         "std": statistics.stdev(runs) if len(runs) > 1 else 0.0,
                         "runs": runs, "count": count,
                         "verdicts": "".join(map(str, first[col].tolist())) if first else ""}
        if getattr(atk, "used", ""):     # the official AutoAttack: what ran, what it warned
            results[name].update(attack=atk.used, warnings=sorted(atk.warnings))
        log(f"{name}: {100 * results[name]['acc']:.2f}%"
            + (f" ± {100 * results[name]['std']:.2f} ({repeats} runs)" if repeats > 1 else "")
            + (f" [{atk.used}]" if getattr(atk, "used", "") else ""))
        for w in results[name].get("warnings", []):
            log(f"{name}: AutoAttack warns: {w}")
        on_done(results)
    return results
