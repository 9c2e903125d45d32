"""Run a grid's elements one after another in this process (``train.py -m`` without a
cluster), like Hydra's basic launcher, but idempotent as a submission is: elements with results
are skipped, so re-running the command continues an interrupted sweep (each unfinished run
resumes from its own checkpoint)."""
from __future__ import annotations

import contextlib
import os
from typing import List

from ..errors import UserError
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
    from ..compose import load_config
    from ..engine.group import lead_decides
    from ..train import main as train_main

    gd = GridDir(plan.grid_dir)
    failed: List[str] = []
    status = 0
    with contextlib.ExitStack() as held:
        todo = _lead_plans(gd, plan, held) if _lead() else None
        # The other ranks take rank 0's list: reading the grid while rank 0 writes grid.json
        # and submissions.jsonl raced (CI: "exists and is not a grid directory").
        todo = lead_decides(todo, lambda: load_config(list(plan.elements[0].overrides)))
        if isinstance(todo, UserError):
            raise todo                        # every rank: one line, exit 2
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
    if _lead():
        print(status_table(element_rows(gd, plan.elements)), flush=True)
    if failed:
        _say(f"distadv: sweep: {len(failed)} run(s) ended without results: {', '.join(failed)}; "
             "run the same command again to retry them")
    _say(f"distadv: sweep of {len(plan.elements)} run(s) in {gd.path}")
    return status


def _lead_plans(gd: GridDir, plan: Plan, held: contextlib.ExitStack):
    """Rank 0: take the grid's lock (kept in ``held``), record the grid and return the
    elements to train; or the UserError that refuses the sweep, for every rank."""
    try:
        held.enter_context(gd.lock())
        gd.adopt(plan.name, plan.elements, plan.info)
    except UserError as exc:
        return exc
    rows = {r["name"]: r for r in element_rows(gd, plan.elements)}
    return [e for e in plan.elements if outcome(rows[e.name]) == "failed"]
