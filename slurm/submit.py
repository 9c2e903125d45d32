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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distadv.grid.cli import run  # noqa: E402


def main(argv) -> int:
    """Parse ``key=value`` arguments and submit."""
    def action(args, rest, cluster_rest):
        from distadv.grid.submit import submit, wait

        flags = {k: args.pop(k, "false").lower() == "true" for k in ("wait", "dry_run")}
        if "grid" not in args or "cluster" not in args:
            raise ValueError("give grid=NAME and cluster=PROFILE")
        summary = submit(args.pop("grid"), args.pop("cluster"), args.pop("grid_dir", None),
                         rest, cluster_rest, dry_run=flags["dry_run"])
        if flags["wait"] and not flags["dry_run"]:
            return 0 if wait(summary["grid_dir"]) else 1
        return 0

    return run(argv, {"grid", "cluster", "grid_dir", "wait", "dry_run"}, action)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
