"""The SLURM job of one grid element: every task is one rank of the same training entry as
``accelerate launch distadv/train.py``.

The element is ``Checkpointable``: on preemption or near the time limit (USR2) submitit calls
``checkpoint`` on rank 0 and requeues the job; the requeued job calls the element again with
the same overrides, and ``fit`` resumes from the run's ``latest`` checkpoint (the last finished
epoch). A plain ``scontrol requeue`` takes the same path without ``checkpoint``. Resume is
exact (per-epoch reseeding), so the final metrics equal an uninterrupted run's.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

import submitit


class TrainElement(submitit.helpers.Checkpointable):
    """Callable pickled by submitit; ``__call__(overrides)`` trains (or resumes) one run."""

    def __call__(self, overrides: List[str]) -> Optional[Dict]:
        """Join the element's process group from SLURM's environment and train. Returns the
        results (rank 0) or None; a failed run raises, so SLURM records the job as FAILED."""
        env = submitit.JobEnvironment()
        # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from SLURM (env:// initialisation).
        # Each rank keeps every GPU of its node visible: Accelerate picks cuda:LOCAL_RANK.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                              overwrite=True)
        from distadv.engine.topology import resolve, this_rank
        from distadv.train import main

        host, addr = this_rank()
        master = os.environ.get("MASTER_ADDR", "?")
        print(f"distadv: element job {env.job_id}, rank {env.global_rank}/{env.num_tasks} on "
              f"{host} ({addr}), rendezvous {master}:{os.environ.get('MASTER_PORT')} "
              f"({resolve(master)})", flush=True)
        status = main(list(overrides))
        if status != 0:
            raise RuntimeError(f"training exited with status {status} (rank {env.global_rank}); "
                               "the reason is in this job's .err log")
        run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("run_dir="))
        results = Path(run_dir) / "results.json"
        out = json.loads(results.read_text()) if env.global_rank == 0 and results.is_file() else None
        atexit.register(_leave_without_teardown)
        return out

    def checkpoint(self, overrides: List[str]) -> submitit.helpers.DelayedSubmission:
        """Requeue with the same arguments: the run's own checkpoints hold all the state, so
        nothing needs saving here (a save in a signal handler could race the epoch's write)."""
        return submitit.helpers.DelayedSubmission(self, overrides)


def _leave_without_teardown() -> None:
    """Registered once the run succeeded, so it runs after submitit has written the job's
    result. The interpreter's native teardown aborts a finished process now and then (see
    ``distadv.train.exit_now``, which launches already leave through); SLURM then records
    FAILED for a complete run with its results (seen once in CI, one element of a 4-element
    array). Flush the log handlers and leave the same way, with status 0."""
    from distadv.train import exit_now

    logging.shutdown()
    exit_now(0)
