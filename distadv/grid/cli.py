"""The grid command lines: ``distadv-submit`` (slurm/submit.py), ``distadv-status``
(slurm/status.py) and ``distadv-report`` (tools/report.py). One-line errors, exit 2."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set


def run(argv: List[str], own_keys: Set[str], action: Callable) -> int:
    """Split ``argv`` into own keys, ``cluster.*`` overrides and recipe overrides; call
    ``action(own, recipe_overrides, cluster_overrides)``; turn bad input into exit 2."""
    from distadv.errors import UserError

    own: Dict[str, str] = {}
    rest, cluster_rest = [], []
    try:
        for a in argv:
            if "=" not in a:
                raise ValueError(f"arguments are key=value, got '{a}'")
            key, value = a.split("=", 1)
            if key in own_keys:
                own[key] = value
            elif key.startswith("cluster."):
                cluster_rest.append(f"{key[len('cluster.'):]}={value}")
            else:
                rest.append(a)
        return action(own, rest, cluster_rest)
    except ModuleNotFoundError as exc:
        if exc.name != "submitit":
            raise
        print("distadv: error: submitit is not installed; grids need the slurm extra: "
              "pip install -e '.[slurm]'", file=sys.stderr)
    except (UserError, ValueError) as exc:
        print(f"distadv: error: {exc}", file=sys.stderr)
    return 2


def submit_main(argv: Optional[List[str]] = None) -> int:
    """``slurm/submit.py grid=NAME cluster=PROFILE [...]``: submit a grid as one job array."""
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

    argv = sys.argv[1:] if argv is None else argv
    return run(argv, {"grid", "cluster", "grid_dir", "wait", "dry_run"}, action)


def status_main(argv: Optional[List[str]] = None) -> int:
    """``slurm/status.py GRID_DIR [--json]``: print the status table (or JSON) of a grid."""
    from distadv.errors import UserError
    from distadv.grid.status import element_rows, status_table
    from distadv.grid.store import GridDir

    argv = sys.argv[1:] if argv is None else argv
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


def report_main(argv: Optional[List[str]] = None) -> int:
    """``tools/report.py GRID_DIR [--out DIR]``: write the report files of one grid directory
    (table.md, table.csv, elements.csv, eps.png, curves.png); exit 2 if it is not one."""
    import argparse

    from distadv.engine.checkpoint import atomic_write
    from distadv.grid.plots import curves_plot, eps_plot
    from distadv.grid.report import collect, element_csv, markdown_table, write_csv
    from distadv.grid.store import GridDir

    ap = argparse.ArgumentParser(description="Tables and plots of a grid.")
    ap.add_argument("grid_dir")
    ap.add_argument("--out", help="folder for the report files (default GRID_DIR/report)")
    args = ap.parse_args(argv)
    gd = GridDir(Path(args.grid_dir))
    if not gd.manifest.is_file():
        print(f"distadv: error: {args.grid_dir} is not a grid directory (no grid.json); grid "
              "directories are made by slurm/submit.py", file=sys.stderr)
        return 2
    data = collect(gd)
    out = Path(args.out) if args.out else gd.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(data)
    atomic_write(out / "table.md", table.encode())
    write_csv(data, out / "table.csv")
    element_csv(data, out / "elements.csv")
    written = [out / "table.md", out / "table.csv", out / "elements.csv",
               eps_plot(data, out / "eps.png"), curves_plot(data, out / "curves.png")]
    print(table)
    print("wrote " + ", ".join(str(p) for p in written if p))
    return 0
