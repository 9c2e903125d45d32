"""Show where each element of a grid stands.

    python slurm/status.py GRID_DIR [--json]

Per element: SLURM job id and state, epoch, best validation robust accuracy (and its epoch),
run directory. Exit 2 with one line if GRID_DIR is not a grid directory.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv) -> int:
    """Print the status table (or JSON) of the grid directory in ``argv``."""
    from distadv.errors import UserError
    from distadv.grid.status import element_rows, status_table
    from distadv.grid.store import GridDir

    args = [a for a in argv if a != "--json"]
    if len(args) != 1:
        print("usage: python slurm/status.py GRID_DIR [--json]", file=sys.stderr)
        return 2
    gd = GridDir(Path(args[0]))
    try:
        if not gd.manifest.is_file():
            raise UserError(f"{args[0]} is not a grid directory (no grid.json); grid "
                            "directories are made by slurm/submit.py (default runs/grids/NAME)")
        rows = element_rows(gd)
    except UserError as exc:
        print(f"distadv: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if "--json" in argv else status_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
