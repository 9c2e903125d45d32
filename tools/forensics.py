"""Attack forensics of a run: ``python tools/forensics.py run=runs/NAME [KEY=VALUE ...]``
(or ``accelerate launch tools/forensics.py ...``); ``--help`` lists the keys. See
distadv/forensics/ and README "Attack forensics"."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from distadv.forensics.cli import cli  # noqa: E402

if __name__ == "__main__":
    cli()
