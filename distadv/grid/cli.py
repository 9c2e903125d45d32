"""The grid command lines: ``distadv-submit`` (slurm/submit.py), ``distadv-status``
(slurm/status.py) and ``distadv-report`` (tools/report.py). One-line errors, exit 2."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

NO_SUBMITIT = ("submitit is not installed; grids need the slurm extra: "
               "pip install -e '.[slurm]'")


def split_args(argv: List[str], own_keys: Set[str]) -> Tuple[Dict[str, str], List[str], List[str]]:
    """``argv`` as (own keys, recipe overrides, ``cluster.*`` overrides without the prefix)."""
    own: Dict[str, str] = {}
    rest, cluster_rest = [], []
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
    return own, rest, cluster_rest


def run(argv: List[str], own_keys: Set[str], action: Callable) -> int:
    """Split ``argv`` (``split_args``); call ``action(own, recipe_overrides,
    cluster_overrides)``; turn bad input into one line and exit 2."""
    from distadv.errors import UserError

    try:
        return action(*split_args(argv, own_keys))
    except ModuleNotFoundError as exc:
        if exc.name != "submitit":
            raise
        print(f"distadv: error: {NO_SUBMITIT}", file=sys.stderr)
    except (UserError, ValueError) as exc:
        print(f"distadv: error: {exc}", file=sys.stderr)
    return 2


def _flag(own: Dict[str, str], key: str) -> bool:
    return own.pop(key, "false").lower() == "true"


def sweep_main(overrides: List[str]) -> int:
    """``train.py -m SWEEP [cluster=PROFILE [cluster.KEY=V] [wait=true] [dry_run=true]]
    [grid_dir=DIR]``: the sweep's runs here one after another, or as one SLURM job array.
    Bad input raises (train.py turns it into one line and exit 2)."""
    from distadv.errors import ConfigError

    from .sweep import plan_sweep

    own, rest, cluster_rest = split_args(overrides, {"cluster", "grid_dir", "wait", "dry_run"})
    flags = {k: _flag(own, k) for k in ("wait", "dry_run")}
    plan = plan_sweep(rest, own.get("grid_dir"))
    if "cluster" not in own:
        if cluster_rest or any(flags.values()):
            raise ConfigError("cluster.KEY=, wait= and dry_run= apply to a SLURM sweep; add "
                              "cluster=PROFILE, or drop them to run the sweep here")
        from .local import run_local
        return run_local(plan)
    from .cluster import load_profile
    from .submit import submit_plan, wait

    profile = load_profile(own["cluster"], cluster_rest)
    try:
        summary = submit_plan(plan, profile, dry_run=flags["dry_run"])
    except ModuleNotFoundError as exc:
        if exc.name != "submitit":
            raise
        raise ConfigError(NO_SUBMITIT) from None
    if flags["wait"] and not flags["dry_run"]:
        return 0 if wait(summary["grid_dir"]) else 1
    return 0


def submit_main(argv: Optional[List[str]] = None) -> int:
    """``slurm/submit.py grid=NAME cluster=PROFILE [...]``: submit a grid as one job array."""
    def action(args, rest, cluster_rest):
        from distadv.grid.submit import submit, wait

        flags = {k: _flag(args, k) for k in ("wait", "dry_run")}
        if "grid" not in args or "cluster" not in args:
            raise ValueError("give grid=NAME and cluster=PROFILE")
        summary = submit(args.pop("grid"), args.pop("cluster"), args.pop("grid_dir", None),
                         rest, cluster_rest, dry_run=flags["dry_run"])
        if flags["wait"] and not flags["dry_run"]:
            return 0 if wait(summary["grid_dir"]) else 1
        return 0

    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        from distadv.cli.help import submit_help
        print(submit_help())
        return 0
    return run(argv, {"grid", "cluster", "grid_dir", "wait", "dry_run"}, action)


def status_main(argv: Optional[List[str]] = None) -> int:
    """``slurm/status.py GRID_DIR [--json]``: print the status table (or JSON) of a grid."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        from distadv.cli.help import status_help
        print(status_help())
        return 0
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


def report_main(argv: Optional[List[str]] = None) -> int:
    """``tools/report.py GRID_DIR [--out DIR]``: write the report files of one grid directory
    (table.md, table.csv, elements.csv, eps.png, curves.png); exit 2 if it is not one."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="distadv-report", description="Tables and plots of a grid (or a -m sweep): "
        "table.md (the seed's layout, best in bold), table.csv (mean/std per configuration "
        "and attack), elements.csv, eps.png (grids with an x axis) and curves.png, in "
        "GRID_DIR/report/.")
    ap.add_argument("grid_dir", help="a grid directory (runs/grids/NAME, runs/sweeps/NAME)")
    ap.add_argument("--out", help="folder for the report files (default GRID_DIR/report)")
    args = ap.parse_args(argv)                       # --help answers before the imports
    from distadv.engine.checkpoint import atomic_write
    from distadv.grid.plots import curves_plot, eps_plot
    from distadv.grid.report import collect, element_csv, markdown_table, write_csv
    from distadv.grid.store import GridDir

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


def submit_cli() -> None:
    """Console script ``distadv-submit``."""
    sys.exit(submit_main())


def status_cli() -> None:
    """Console script ``distadv-status``."""
    sys.exit(status_main())


def report_cli() -> None:
    """Console script ``distadv-report``."""
    sys.exit(report_main())
