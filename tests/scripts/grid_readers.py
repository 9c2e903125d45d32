"""``python -m distadv.train ARGS`` with the grid directory's readers logged: each call of
GridDir.read_manifest / GridDir.attempts appends "RANK METHOD" to $GRID_READERS_LOG. Launched
with 2 processes by tests/test_cli.py: a sweep's records are rank 0's alone (another rank
reading them while rank 0 writes them raced)."""
import os
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from distadv.grid.store import GridDir  # noqa: E402


def logged(method):
    real = getattr(GridDir, method)

    def wrapper(self, *args, **kwargs):
        with open(os.environ["GRID_READERS_LOG"], "a") as f:
            f.write(f"{os.environ.get('RANK', '0')} {method}\n")
        return real(self, *args, **kwargs)
    setattr(GridDir, method, wrapper)


for name in ("read_manifest", "attempts"):
    logged(name)
sys.argv = ["distadv.train", *sys.argv[1:]]
runpy.run_module("distadv.train", run_name="__main__", alter_sys=True)
