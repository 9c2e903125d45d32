"""Train one recipe: ``accelerate launch distadv/train.py recipe=NAME [key=value ...]``.

Also runs as ``python distadv/train.py ...`` (one process) or ``python -m distadv.train``.
Bad input prints one line, ``distadv: error: ...``, and exits with status 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import the package from the checkout, not from distadv/ itself.
    sys.path[0] = str(Path(__file__).resolve().parents[1])


def main(argv=None) -> int:
    """Compose the config from ``argv`` (Hydra overrides), fit, and return the exit status."""
    from distadv.compose import load_config
    from distadv.engine.fit import fit
    from distadv.errors import UserError

    try:
        fit(load_config(sys.argv[1:] if argv is None else argv))
    except UserError as exc:
        print(f"distadv: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
