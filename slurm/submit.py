"""Submit a grid of runs as one SLURM job array (through submitit).

    python slurm/submit.py grid=table1 cluster=local [grid_dir=runs/grids/table1]
        [cluster.KEY=VALUE ...] [KEY=VALUE ...] [wait=true] [dry_run=true]

KEY=VALUE pairs are recipe overrides applied to every element (e.g. optim.epochs=2);
cluster.KEY=VALUE override the cluster profile (slurm/clusters/PROFILE.yaml). Re-running the
same command skips finished and running elements and resubmits failed ones.
Bad input: one line ``distadv: error: ...`` and exit 2; wait=true exits 1 if an element
ended without results.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from distadv.grid.cli import submit_main as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
