"""Tables and plots of a grid: ``python tools/report.py GRID_DIR [--out DIR]``.

Writes to GRID_DIR/report/ (or --out): table.md (the seed's layout, best in bold, percent),
table.csv (mean/std per configuration and attack), elements.csv (one row per run),
eps.png (test accuracy against the training eps, for grids with an ``x`` axis) and
curves.png (per-epoch train and validation robust accuracy, best epoch marked); prints the
table. All elements' TensorBoard logs share GRID_DIR: ``tensorboard --logdir GRID_DIR``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    """Write the report files of one grid directory; exit 2 if it is not one."""
    from distadv.engine.checkpoint import atomic_write
    from distadv.grid.plots import curves_plot, eps_plot
    from distadv.grid.report import collect, element_csv, markdown_table, write_csv
    from distadv.grid.store import GridDir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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


if __name__ == "__main__":
    sys.exit(main())
