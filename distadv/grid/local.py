"""Run a grid's elements one after another in this process (``train.py -m`` without a
cluster), like Hydra's basic launcher, but idempotent as a submission is: elements with results
are skipped, so re-running the command continues an interrupted sweep (each unfinished run
resumes from its own checkpoint)."""
from __future__ import annotations

import contextlib
import os
from typing import List

from .status import element_rows, outcome, status_table
from .store import GridDir
from .submit import Plan


def _lead() -> bool:
    """Rank 0 of a launch (or the only process): it alone speaks, locks and records. Every
    rank walks the same elements: each run needs all of them."""
    return os.environ.get("RANK", "0") == "0"


def _say(line: str) -> None:
    if _lead():
        print(line, flush=True)


def run_local(plan: Plan) -> int:
    """Train every unfinished element of ``plan`` in order (under the grid's lock, so a second
    copy of the same sweep is refused); return 0 if all have results, else the first failed
    run's exit status. A failed element does not stop the ones after it."""
    from ..train import main as train_main

    gd = GridDir(plan.grid_dir)
    failed: List[str] = []
    status = 0
    with gd.lock() if _lead() else contextlib.nullcontext():
        if _lead():                 # the others would race its write of grid.json
            gd.adopt(plan.name, plan.elements, plan.info)
        rows = {r["name"]: r for r in element_rows(gd, plan.elements)}
        todo = [e for e in plan.elements if outcome(rows[e.name]) == "failed"]
        done = len(plan.elements) - len(todo)
        if done:
            _say(f"distadv: sweep: skipping {done} element(s) with results or running on SLURM")
        for i, e in enumerate(todo, 1):
            _say(f"distadv: sweep run {i}/{len(todo)}: {e.name} ({' '.join(e.overrides)})")
            if _lead():
                gd.record({"local": [e.name]})
            code = train_main(list(e.overrides) + [f"run_dir={gd.run_dir(e.name)}"],
                              close_group=False)
            if code != 0:
                failed.append(e.name)
                status = status or code
    _say(status_table(element_rows(gd, plan.elements)))
    if failed:
        _say(f"distadv: sweep: {len(failed)} run(s) ended without results: {', '.join(failed)}; "
             "run the same command again to retry them")
    _say(f"distadv: sweep of {len(plan.elements)} run(s) in {gd.path}")
    return status
