"""Evaluate a run: ``accelerate launch distadv/evaluate.py run=runs/<name> suite=<suite>``.

Also ``python distadv/evaluate.py ...`` on one process. Suites (recipes/suite/): seed,
autoattack, eot, full (all + the gradient-masking audit). The best checkpoint and the test
split by default; results go to ``<run>/eval/<suite>.json`` and a printed table. Each rank
attacks its own shard and exact counts are gathered. An interrupted evaluation resumes:
finished attacks are not recomputed. Bad input: one line, exit 2 (statuses as in train.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])


def main(argv=None, close_group: bool = True) -> int:
    """Compose the evaluation config from ``argv``, run the suite, return the exit status
    (``close_group``: as in distadv/train.py)."""
    from distadv.compose import load_eval_config
    from distadv.engine.faults import report

    try:
        ecfg = load_eval_config(sys.argv[1:] if argv is None else argv)
        from distadv.eval.evaluate import run_evaluation
        run_evaluation(ecfg)
    except Exception as exc:  # noqa: BLE001 - only known failures are reported, bugs re-raise
        status = report(exc, None)
        if status is None:
            raise
        return status
    finally:
        if close_group:
            from distadv.train import _close_process_group
            _close_process_group()
    return 0


if __name__ == "__main__":
    from distadv.engine.faults import report_sigterm
    from distadv.train import exit_now

    report_sigterm()
    exit_now(main(close_group=False))
