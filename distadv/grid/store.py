"""A grid directory: the element run directories (one TensorBoard root for the whole grid)
and the grid's records.

GRID_DIR/grid.json           the expanded grid (elements and their overrides), written once
GRID_DIR/submissions.jsonl   one line per submission attempt: job ids, or sbatch's error
                             (or the elements a local -m sweep started)
GRID_DIR/.submit.lock        held (flock) by the submission in progress
GRID_DIR/.submitit/          submitit's pickles and the jobs' stdout/stderr logs
GRID_DIR/<element>/          each element's run directory (config, checkpoints, tb/, results)
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

from ..engine.checkpoint import write_json
from ..errors import GridError
from .spec import Element


class GridDir:
    """Read and append the records of one grid directory."""

    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self.manifest = self.path / "grid.json"
        self.submissions = self.path / "submissions.jsonl"
        self.logs = self.path / ".submitit"

    def run_dir(self, element: str) -> Path:
        """The run directory of one element."""
        return self.path / element

    @contextlib.contextmanager
    def lock(self, what: str = "submit") -> Iterator[None]:
        """Hold the grid's ``what`` lock (``.submit.lock``: one submission at a time;
        ``.search.lock``: one search driver at a time); a second holder is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / f".{what}.lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                noun = {"submit": "submission", "search": "search driver"}.get(what, what)
                raise GridError(f"another {noun} of this grid is running ({f.read().strip()}); "
                                "wait for it to finish, then run slurm/status.py") from None
            f.truncate(0)
            f.write(f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}")
            f.flush()
            yield

    def read_manifest(self) -> Dict:
        """The recorded grid, or {} for a new grid directory."""
        if not self.manifest.is_file():
            if self.path.exists() and any(p.name not in (".submit.lock", ".search.lock")
                                          for p in self.path.iterdir()):
                raise GridError(f"{self.path} exists and is not a grid directory (no grid.json); "
                                "choose another grid_dir=")
            return {}
        return json.loads(self.manifest.read_text())

    def adopt(self, grid: str, elements: Sequence[Element], info: Dict, write: bool = True,
              extend: bool = False) -> Dict:
        """Record a new grid (unless ``write`` is False: dry runs), or check that a
        re-submission describes the same elements. ``info`` (description, plot axis) is
        recorded for the report. ``extend``: ``elements`` are added to the recorded ones
        (a recorded name must keep its overrides), for a search's growing set of trials."""
        new = {"grid": grid, **info, "elements": [asdict(e) for e in elements]}
        new = json.loads(json.dumps(new))             # tuples -> lists, as read back
        old = self.read_manifest()
        if extend and old and _info(old) == _info(new):
            recorded = {e["name"]: e for e in old["elements"]}
            clash = [e["name"] for e in new["elements"]
                     if e["name"] in recorded and recorded[e["name"]] != e]
            if clash:
                raise GridError(f"{self.path}: element(s) {', '.join(clash[:4])} are recorded "
                                "with other overrides; nothing was submitted. Use another grid_dir=")
            new = dict(old, elements=old["elements"] + [e for e in new["elements"]
                                                        if e["name"] not in recorded])
            if write and new != old:
                write_json(self.manifest, new)
            return new
        if not old:
            if write:
                write_json(self.manifest, new)
            return new
        if old != new:
            old_e = {e["name"]: e["overrides"] for e in old["elements"]}
            new_e = {e["name"]: e["overrides"] for e in new["elements"]}
            diff = sorted(n for n in set(old_e) | set(new_e) if old_e.get(n) != new_e.get(n))
            raise GridError(f"{self.path} holds grid '{old['grid']}' with other elements "
                            f"(differ: {', '.join(diff[:4])}{' ...' if len(diff) > 4 else ''}); "
                            "nothing was submitted. Use the same grid and overrides to resume "
                            "it, or another grid_dir=")
        return old

    def done_file(self) -> str:
        """The file whose presence marks an element finished: results.json (a training run),
        or what the manifest names (a search trial: objectives.json)."""
        return self.read_manifest().get("done", "results.json")

    def elements(self) -> List[Dict]:
        """The recorded elements (dicts of ``Element``)."""
        return self.read_manifest().get("elements", [])

    def record(self, entry: Dict) -> None:
        """Append one submission record and fsync it (it is the only link to the job ids)."""
        with open(self.submissions, "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **entry}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def attempts(self) -> List[Dict]:
        """Every submission record, oldest first."""
        if not self.submissions.is_file():
            return []
        return [json.loads(line) for line in self.submissions.read_text().splitlines() if line]

    def local_runs(self) -> List[str]:
        """Elements a ``train.py -m`` sweep ran in its own process (no SLURM job)."""
        return [n for a in self.attempts() for n in a.get("local", [])]

    def job_ids(self) -> Dict[str, str]:
        """Element name -> the SLURM job id of its latest successful submission."""
        jobs: Dict[str, str] = {}
        for a in self.attempts():
            jobs.update(a.get("jobs", {}))
        return jobs


def _info(manifest: Dict) -> Dict:
    """A manifest without its elements: what an extending submission must agree on."""
    return {k: v for k, v in manifest.items() if k != "elements"}
