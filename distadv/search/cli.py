"""``distadv-search`` (slurm/search.py): run or continue a search. One-line errors, exit 2."""
from __future__ import annotations

import sys
from typing import List, Optional

OWN = {"search", "cluster", "search_dir", "best_recipe"}


def search_main(argv: Optional[List[str]] = None) -> int:
    """``slurm/search.py search=NAME cluster=PROFILE [search_dir=DIR] [best_recipe=NAME]
    [search.KEY=V ...] [cluster.KEY=V ...] [KEY=V ...]``: exit 0 once ``trials`` trials are
    complete, 1 if the search stopped on failed trials, 2 on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        from distadv.cli.help import search_help
        print(search_help())
        return 0

    def action(own, rest, cluster_rest):
        from distadv.errors import SearchError
        from distadv.search.driver import run_search

        if "search" not in own or "cluster" not in own:
            raise ValueError("give search=NAME and cluster=PROFILE (see --help)")
        file_rest = [a[len("search."):] for a in rest if a.startswith("search.")]
        recipe_rest = [a for a in rest if not a.startswith("search.")]
        try:
            run_search(own["search"], own["cluster"], own.get("search_dir"), file_rest,
                       recipe_rest, cluster_rest, own.get("best_recipe"))
        except SearchError as exc:
            if "trials failed" not in str(exc):
                raise
            print(f"distadv: {exc}", file=sys.stderr)
            return 1
        return 0

    from distadv.grid.cli import run
    return run(argv, OWN, action)


def search_cli() -> None:
    """Console script ``distadv-search``."""
    sys.exit(search_main())
