"""Tables and plots of a grid: ``python tools/report.py GRID_DIR [--out DIR]``.

Writes to GRID_DIR/report/ (or --out): table.md (the seed's layout, best in bold, percent),
table.csv (mean/std per configuration and attack), elements.csv (one row per run),
eps.png (test accuracy against the training eps, for grids with an ``x`` axis) and
curves.png (per-epoch train and validation robust accuracy, best epoch marked); prints the
table. All elements' TensorBoard logs share GRID_DIR: ``tensorboard --logdir GRID_DIR``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from distadv.grid.cli import report_main as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
