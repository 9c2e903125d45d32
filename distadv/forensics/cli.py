"""``tools/forensics.py``'s command line: ``run=runs/NAME [KEY=VALUE ...]``, ``--help`` (fast:
read from the schema's source, nothing heavy imported), ``--cfg job``; bad input is one line
and exit status 2, a dead peer 3 (as distadv/evaluate.py)."""
from __future__ import annotations

import sys
from typing import List, Optional

USAGE = """\
usage: python tools/forensics.py run=runs/NAME [KEY=VALUE ...] [--cfg job]
       accelerate launch tools/forensics.py run=runs/NAME   (each rank attacks its shard)

Attack forensics of a run: clean images and FGSM, PGD-L-inf, PGD-L2, APGD-CE and Square images
made against the run's own model at its radii (detector training split: from the run's
validation split; test split: from its test split, so no source image is in both); a detector
(fixed high-pass residual filters + a small CNN) and a baseline (the same CNN on pixels) learn
the attack type; the adaptive attack (PGD against the classifier and the detector together)
says what the detector is worth. Writes <run>/forensics/ (or out=): chunks/ (the labelled set),
detector.safetensors, baseline.safetensors, report.json, confusion.png, roc.png; prints a
table. An interrupted study resumes; other settings are refused, never mixed. Exit status: 0
done, 2 bad input, 3 a peer died.

Options:
  -h, --help        show this text and exit
  --cfg job         print the config as YAML and exit (writes nothing)
  --resolve         with --cfg job: resolve ${...} interpolations
"""


def forensics_help() -> str:
    """The ``--help`` text: usage, then every key with its type, default and meaning."""
    from ..cli.help import keys_text
    from ..cli.schema_doc import PACKAGE, walk

    return (USAGE + "\nKeys (KEY=VALUE; key: type = default, then its meaning):\n"
            + keys_text(walk(PACKAGE / "forensics" / "config.py", "ForensicsConfig")) + "\n")


def main(argv: Optional[List[str]] = None, close_group: bool = True) -> int:
    """Parse ``argv``, run the study, return the exit status."""
    from ..cli.args import parse_command, print_config

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cmd = parse_command(argv, multirun=False)
        if cmd.help:
            print(forensics_help())
            return 0
        from .config import load_forensics_config
        fcfg = load_forensics_config(cmd.overrides)
        if cmd.cfg:
            print_config(fcfg, cmd.resolve)
            return 0
        from .run import run_forensics
        run_forensics(fcfg)
    except Exception as exc:  # noqa: BLE001 - only known failures are reported, bugs re-raise
        from ..engine.faults import report

        status = report(exc, None)
        if status is None:
            raise
        return status
    finally:
        if close_group:
            from ..train import _close_process_group
            _close_process_group()
    return 0


def cli() -> None:
    """The script entry: help without torch, SIGTERM reported, leave through ``exit_now``."""
    from ..cli.args import answer_help
    from ..train import exit_now

    quick = answer_help(sys.argv[1:], forensics_help)
    if quick is not None:
        sys.exit(quick)
    from ..engine.faults import report_sigterm

    report_sigterm()
    exit_now(main(close_group=False))
