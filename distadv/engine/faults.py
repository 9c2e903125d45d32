"""Failures: crash points for fault injection, stopping every rank together, and turning any
failure into one line and an exit status."""
from __future__ import annotations

import os
import re
import signal
import sys
from collections import Counter
from typing import Callable, Optional

import torch

from ..errors import RunFailure, UserError

# tools/fault_inject.py sets DISTADV_CRASH_AT=<point>:<n>: the n-th time this process reaches
# <point>, it kills itself with SIGKILL, exactly like `kill -9` at that instant (the launcher
# then stops the other ranks). Points: train.step (before a step's backward), eval.batch (each
# validation or test batch), checkpoint.written (new file fsynced, not yet renamed),
# checkpoint.rotated (latest moved to previous, the new one not yet in place), forensics.batch
# (each batch a forensics attack generates), forensics.chunk (a labelled-set chunk
# written; the file write itself passes checkpoint.written).
# DISTADV_CRASH_AT=count:<file> instead appends each point rank 0 reaches to <file>, so the tool
# can choose n. Cost when unset: one string test per call.
_CRASH_AT = os.environ.get("DISTADV_CRASH_AT", "")
_hits: Counter = Counter()


def crash_point(name: str) -> None:
    """Die with SIGKILL here if DISTADV_CRASH_AT names this point and occurrence."""
    if not _CRASH_AT:
        return
    point, _, arg = _CRASH_AT.partition(":")
    if point == "count":
        if os.environ.get("RANK", "0") == "0":
            with open(arg, "a") as f:
                f.write(name + "\n")
        return
    _hits[name] += 1
    if point == name and _hits[name] == int(arg or 1):
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def stop_together(accelerator, failure: Optional[BaseException],
                  what: str = "another rank failed") -> None:
    """A collective failure flag (one all-reduce; also a barrier): if any rank failed, every
    rank raises, so no rank is left waiting in a collective until the timeout. The failing
    rank re-raises its own error; the others raise RunFailure naming ``what``."""
    flag = torch.tensor([0.0 if failure is None else 1.0], device=accelerator.device)
    flag = accelerator.reduce(flag, reduction="sum")
    if failure is not None:
        raise failure
    if flag.item() > 0:
        raise RunFailure(f"{what}; see that rank's error. The last good checkpoint is kept")


def main_writes(accelerator, write: Callable[[], None], what: str) -> None:
    """Rank 0 runs ``write``; then every rank learns whether it failed (``stop_together``). A
    disk-full or bad-input error on rank 0 thus stops all ranks instead of leaving them waiting
    in the next collective until the timeout."""
    failure = None
    if accelerator.is_main_process:
        try:
            write()
        except (RunFailure, UserError) as exc:
            failure = exc
    stop_together(accelerator, failure, what)


def describe_dist_failure(exc: BaseException, timeout_s: Optional[int]) -> Optional[str]:
    """A one-line explanation if ``exc`` is a failed or timed-out collective, else None."""
    dist_error = getattr(torch.distributed, "DistError", ())
    text = str(exc)
    if not (isinstance(exc, dist_error) or "Timed out" in text or "Connection closed by peer" in text
            or "Connection reset by peer" in text):
        return None
    # gloo's line: "[.../pair.cc:561] Connection closed by peer [addr]:port. This is ...":
    # keep the first sentence without the source location.
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0][:200]
    return (f"a collective failed: a peer process died or did not answer within "
            f"runtime.timeout_s={timeout_s} s ({first}); check the other ranks' logs, then rerun "
            f"the same command to resume from the last checkpoint")


def error_line(message: str) -> None:
    """Print ``distadv: error: <message>`` to stderr in one write: ranks share the launcher's
    pipe, and a single write below PIPE_BUF is never interleaved with another rank's."""
    sys.stderr.write(f"distadv: error: {message}\n")
    sys.stderr.flush()


def report(exc: BaseException, timeout_s: Optional[int]) -> Optional[int]:
    """Print the one line for a failure the entry points know and return the exit status:
    2 bad input, 3 a dead or silent peer, 4 the run failed. None for a bug (the caller
    re-raises it, traceback and all)."""
    status, message = None, str(exc)
    if isinstance(exc, UserError):
        status = 2
    elif isinstance(exc, RunFailure):
        status = 4
    elif isinstance(exc, RuntimeError):
        message = describe_dist_failure(exc, timeout_s)
        status = None if message is None else 3
    if status is not None:
        error_line(message)
    return status


def report_sigterm() -> None:
    """Script entries: on SIGTERM print why this rank stops, then exit 143 at once. The launcher
    (torchrun) sends it to every rank when one rank dies; SLURM on scancel. Files are written
    atomically, so stopping mid-write loses nothing; the next run resumes."""
    def handler(signum, frame):
        error_line(f"rank {os.environ.get('RANK', '0')} stopped by SIGTERM: another rank died "
                   "(the launcher stops them all) or the job was cancelled; rerun the same "
                   "command to resume from the last checkpoint")
        os._exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
