"""Process plumbing shared by the tools and the tests: the 2-process CPU launch
of `make demo`, killing a launch with every rank, and reaping orphans."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import psutil  # accelerate's own dependency

ROOT = Path(__file__).resolve().parents[1]
_PR_SET_CHILD_SUBREAPER = 36


def launch_cmd(script: str, *args: str, config: str = "ddp", processes: int = 2) -> List[str]:
    """`accelerate launch --config_file recipes/accelerate/<config>.yaml` of any repo script
    with ``processes`` ranks: `make demo`'s launch when run with cpu_env() (the ddp config's
    MULTI_GPU + ACCELERATE_USE_CPU=1 = gloo ranks on CPU; DeepSpeed must not have that
    variable). Every launch of the tools and tests: one place for torchrun's flags."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / f"recipes/accelerate/{config}.yaml"), "--num_processes", str(processes),
            "--log_dir", os.devnull,  # else torchrun leaves a /tmp/torchelastic_* per launch
            str(ROOT / script), *args]


def cpu_env(**extra: str) -> Dict[str, str]:
    """The environment of a CPU launch: one thread per rank (2 cores), repo on the path."""
    env = dict(os.environ)
    env.update(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
               PYTHONUNBUFFERED="1", **extra)
    return env


def become_subreaper() -> None:
    """Orphans of a killed launcher (its ranks) are re-parented to this process, not to PID 1,
    so reap_orphans() can collect them: no zombies, whatever PID 1 is."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def reap_orphans() -> int:
    """Collect every exited child that nobody waits for; returns how many."""
    n = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return n
        if pid == 0:
            return n
        n += 1


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a launcher and all its descendants at once (the ranks run in their own
    sessions, so a process-group kill would miss them)."""
    try:
        victims = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        victims = []
    for p in [psutil.Process(proc.pid), *victims] if proc.poll() is None else victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def live_descendants() -> List[psutil.Process]:
    """This process's descendants that still exist (zombies included, with their status)."""
    return psutil.Process().children(recursive=True)


def zombies() -> List[psutil.Process]:
    """Zombie processes on the machine whose parent is this process or a descendant of it,
    or PID 1 (where orphans end up without a subreaper)."""
    owners = {os.getpid(), 1, *(p.pid for p in live_descendants())}
    out = []
    for p in psutil.process_iter(["status", "ppid"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE and p.info["ppid"] in owners:
            out.append(p)
    return out
