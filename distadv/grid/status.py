"""Where each element of a grid stands: SLURM state (squeue for live jobs, sacct for the
rest, scontrol for ended jobs accounting has not recorded yet), epoch and best validation robust accuracy (the run's progress.json), run directory."""
from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from typing import Dict, Iterable, List

from omegaconf import OmegaConf

from .store import GridDir

# States in which SLURM will still run (or is running) the job: a re-submission skips these.
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED",
          "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}


def _run(cmd: List[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def slurm_states(job_ids: Iterable[str]) -> Dict[str, str]:
    """Job id (``ARRAY_INDEX``) -> state word. squeue first (it expands pending array elements,
    which sacct lists as one ``ID_[0-3]`` line), then sacct (needs accounting) for ended jobs."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    states: Dict[str, str] = {}
    for line in _run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(ids)]).splitlines():
        jid, _, state = line.partition(" ")
        states[jid] = state.strip()
    missing = [j for j in ids if j not in states]
    if missing:
        out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(missing)])
        for line in out.splitlines():
            jid, _, state = line.partition("|")
            if jid in missing:
                states[jid] = (state.split() or ["UNKNOWN"])[0]
    for jid in [j for j in ids if j not in states]:
        # slurmctld hands ended jobs to slurmdbd asynchronously, so a job that just ended can
        # be missing from sacct; the controller still knows it for MinJobAge (300 s by
        # default). One call per such job; normally none. An array task cancelled while still
        # PENDING leaves no record anywhere (SLURM drops it from the array; measured on the
        # local SLURM): it stays UNKNOWN, which counts as ended without results (resubmitted).
        out = _run(["scontrol", "-o", "show", "job", jid])
        found = [f.split("=", 1)[1] for f in out.split() if f.startswith("JobState=")]
        if found:
            states[jid] = found[0]
    return {j: states.get(j, "UNKNOWN") for j in ids}


def element_rows(grid_dir: GridDir, elements=None) -> List[Dict]:
    """One dict per element (the recorded ones, or ``elements``): name, config, job, state,
    finished, epoch, epochs, metric, best, best_epoch, run_dir."""
    jobs = grid_dir.job_ids()
    local = set(grid_dir.local_runs())
    done = grid_dir.done_file()
    states = slurm_states(jobs.values())
    rows = []
    for e in grid_dir.elements() if elements is None else [asdict(e) for e in elements]:
        run = grid_dir.run_dir(e["name"])
        job = jobs.get(e["name"])
        row = {"name": e["name"], "config": e["config"], "job": job,
               "state": (states.get(job, "UNKNOWN") if job
                         else "LOCAL" if e["name"] in local else "NOT_SUBMITTED"),
               "finished": (run / done).is_file(), "epoch": 0, "epochs": None,
               "metric": None, "best": None, "best_epoch": None, "run_dir": str(run)}
        if (run / "config.yaml").is_file():
            row["epochs"] = OmegaConf.load(run / "config.yaml").optim.epochs
        if (run / "progress.json").is_file():
            p = json.loads((run / "progress.json").read_text())
            row.update(epoch=p["epoch"], metric=p["metric"], best=p["best"],
                       best_epoch=p["best_epoch"])
        rows.append(row)
    return rows


def outcome(row: Dict) -> str:
    """'finished', 'active' (SLURM still has it) or 'failed' (ended without results, or never
    submitted): what a re-submission does with the element."""
    if row["finished"]:
        return "finished"
    if row["state"] in ACTIVE:
        return "active"
    return "failed"


def status_table(rows: List[Dict]) -> str:
    """The rows as an aligned text table."""
    head = ["element", "job", "slurm state", "epoch", "best val robust", "run dir"]
    lines = [head]
    for r in rows:
        best = (f"{r['metric']} {100 * r['best']:.2f}% @{r['best_epoch']}"
                if r["best"] is not None else "-")
        state = r["state"] + (" (results)" if r["finished"] else "")
        lines.append([r["name"], r["job"] or "-", state,
                      f"{r['epoch']}/{r['epochs'] or '?'}", best, r["run_dir"]])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)
