"""Show where each element of a grid stands.

    python slurm/status.py GRID_DIR [--json]

Per element: SLURM job id and state, epoch, best validation robust accuracy (and its epoch),
run directory. Exit 2 with one line if GRID_DIR is not a grid directory.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from distadv.grid.cli import status_main as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
