"""Evaluate a run: ``accelerate launch distadv/evaluate.py run=runs/<name> suite=<suite>``,
or a model trained elsewhere: ``model=MODULE:FACTORY checkpoint=FILE data=cifar10 suite=...``
(``distadv/eval/external.py``).

Also ``python distadv/evaluate.py ...`` on one process, ``distadv-evaluate`` or
``accelerate launch -m distadv.evaluate``; ``--help`` lists suites and keys. Suites
(recipes/suite/): seed, autoattack, eot, full (all + the gradient-masking audit). The best checkpoint and the test
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
    (``close_group``: as in distadv/train.py). ``--help``; ``--cfg job [--resolve]`` prints
    the composed config and exits."""
    from distadv.cli.args import parse_command, print_config

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cmd = parse_command(argv, multirun=False)
        if cmd.help:
            from distadv.cli.help import evaluate_help
            print(evaluate_help())
            return 0
        from distadv.compose import load_eval_config
        ecfg = load_eval_config(cmd.overrides)
        if cmd.cfg:
            print_config(ecfg, cmd.resolve)
            return 0
        from distadv.eval.evaluate import run_evaluation
        run_evaluation(ecfg)
    except Exception as exc:  # noqa: BLE001 - only known failures are reported, bugs re-raise
        from distadv.engine.faults import report

        status = report(exc, None)
        if status is None:
            raise
        return status
    finally:
        if close_group:
            from distadv.train import _close_process_group
            _close_process_group()
    return 0


def cli() -> None:
    """The script and console-script entry (``distadv-evaluate``): help without torch."""
    from distadv.cli.args import answer_help
    from distadv.cli.help import evaluate_help
    from distadv.train import exit_now

    quick = answer_help(sys.argv[1:], evaluate_help)
    if quick is not None:
        sys.exit(quick)
    from distadv.engine.faults import report_sigterm

    report_sigterm()
    exit_now(main(close_group=False))


if __name__ == "__main__":
    cli()
