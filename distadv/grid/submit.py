"""Submit a grid as ONE SLURM job array, idempotently.

Finished elements (results.json) and elements SLURM still runs are skipped; elements that
ended without results (failed, cancelled, timed out) or were never submitted go into the new
array. One submission per grid at a time (a lock); every attempt is recorded, refused ones
with sbatch's message.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..errors import GridError
from .cluster import ClusterProfile, as_dict, executor, load_profile
from .spec import Element, check_elements, expand, grid_dir_default, load_grid
from .status import ACTIVE, element_rows, outcome, status_table
from .store import GridDir


@dataclass(frozen=True)
class Plan:
    """What a submission (or a local sweep) works on: the grid's name, its elements in order,
    the report's info (description, plot axis) and the grid directory."""

    name: str
    elements: List[Element]
    info: Dict
    grid_dir: Path
    # The job's callable, called with each element's overrides (+ run_dir=); None: TrainElement.
    # A search passes its SearchElement (train, then measure the objectives).
    element: Optional[Callable] = None
    # True: the elements are added to those the grid directory records (a search grows one
    # batch of trials at a time); False: they must be the recorded ones (a grid, a sweep).
    extend: bool = False


def plan_grid(grid: str, grid_dir: Optional[str] = None, overrides: Sequence[str] = ()) -> Plan:
    """Load, expand and check the grid file ``recipes/grid/<grid>.yaml`` (every element's
    config composes, or nothing is submitted)."""
    spec = load_grid(grid)
    elements = expand(grid, spec, overrides)
    check_elements(grid, elements)
    return Plan(grid, elements, {"description": spec.description, "x": spec.x},
                Path(grid_dir) if grid_dir else grid_dir_default(grid))


def submit(grid: str, cluster: str, grid_dir: Optional[str] = None, overrides: Sequence[str] = (),
           cluster_overrides: Sequence[str] = (), dry_run: bool = False) -> Dict:
    """Expand, check and submit ``grid`` on ``cluster``; returns {'submitted', 'skipped',
    'resubmitted', 'array'}. Everything that can be refused is refused before sbatch runs."""
    load_grid(grid)                                   # an unknown grid is named first
    profile = load_profile(cluster, cluster_overrides)
    return submit_plan(plan_grid(grid, grid_dir, overrides), profile, dry_run)


def submit_plan(plan: Plan, profile: ClusterProfile, dry_run: bool = False) -> Dict:
    """Submit the elements of ``plan`` that have no results and that SLURM does not run as
    ONE job array; see ``submit`` for the summary returned."""
    grid, elements = plan.name, plan.elements
    if not dry_run:
        import submitit  # noqa: F401  (a missing slurm extra is reported before anything is written)
    gd = GridDir(plan.grid_dir)
    with gd.lock():
        gd.adopt(grid, elements, plan.info, write=not dry_run, extend=plan.extend)
        rows = {r["name"]: r for r in element_rows(gd, elements)}
        todo = [e for e in elements if outcome(rows[e.name]) == "failed"]
        again = [e.name for e in todo if rows[e.name]["job"]]
        summary = {"grid_dir": str(gd.path), "submitted": [e.name for e in todo],
                   "resubmitted": again, "array": None,
                   "skipped": {n: outcome(r) for n, r in rows.items() if outcome(r) != "failed"}}
        if again:
            print("distadv: resubmitting elements that ended without results: "
                  + ", ".join(f"{n} ({rows[n]['state']})" for n in again))
        if summary["skipped"]:
            print(f"distadv: skipping {len(summary['skipped'])} element(s): "
                  + ", ".join(f"{n} ({o})" for n, o in summary["skipped"].items()))
        if not todo or dry_run:
            print(f"distadv: {'dry run: would submit' if dry_run else 'nothing to submit;'} "
                  f"{len(todo)} element(s) of grid '{grid}' in {gd.path}")
            return summary
        ex = executor(profile, gd.logs, f"distadv-{grid}")
        fn = plan.element
        if fn is None:
            from .element import TrainElement
            fn = TrainElement()
        try:
            with ex.batch():
                jobs = [ex.submit(fn, list(e.overrides) + [f"run_dir={gd.run_dir(e.name)}"])
                        for e in todo]
        except Exception as exc:  # submitit wraps sbatch's refusal; its text is the message
            message = _sbatch_message(exc)
            gd.record({"error": message, "elements": summary["submitted"],
                       "cluster": as_dict(profile)})
            raise GridError(f"sbatch refused the job array: {message}; nothing was submitted "
                            f"(the attempt is recorded in {gd.submissions})") from None
        array = jobs[0].job_id.split("_")[0]
        gd.record({"array": array, "jobs": {e.name: j.job_id for e, j in zip(todo, jobs)},
                   "cluster": as_dict(profile)})
        summary["array"] = array
        print(f"distadv: submitted grid '{grid}' as job array {array} ({len(todo)} element(s), "
              f"{profile.nodes}x{profile.tasks_per_node} rank(s) each, at most "
              f"{profile.array_parallelism} at once) -> {gd.path}")
    return summary


def _sbatch_message(exc: Exception) -> str:
    """The useful lines of a failed sbatch call (submitit prefixes its own context)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() and "sbatch" in ln.lower()]
    return "; ".join(errors or lines[-2:]) or type(exc).__name__


def wait(grid_dir: str, poll_s: float = 5.0, timeout_s: Optional[float] = None) -> bool:
    """Block until SLURM runs none of the grid's jobs; print the status table; True if every
    element finished (has results)."""
    gd = GridDir(Path(grid_dir))
    start = time.monotonic()
    while True:
        rows = element_rows(gd)
        if not any(r["state"] in ACTIVE for r in rows):
            break
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise GridError(f"grid still running after {timeout_s:.0f} s; see slurm/status.py")
        time.sleep(poll_s)
    print(status_table(rows))
    return all(r["finished"] for r in rows)
