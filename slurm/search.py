"""Run (or continue) a robust architecture search: Optuna trials as SLURM job arrays.

    python slurm/search.py search=digits cluster=local [search_dir=runs/searches/digits]
        [best_recipe=NAME] [search.KEY=VALUE ...] [cluster.KEY=VALUE ...] [KEY=VALUE ...]

search.KEY=VALUE override the search file (recipes/search/NAME.yaml: trials=, parallel=, ...);
cluster.KEY=VALUE the cluster profile; other KEY=VALUE pairs are recipe overrides added to the
search's fixed ones. Running the same command again continues the search from its journal.
Bad input: one line ``distadv: error: ...`` and exit 2; exit 1 if too many trials failed.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout

from distadv.search.cli import search_main as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
