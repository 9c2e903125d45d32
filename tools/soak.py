"""Soak: many back-to-back demo runs, checking that nothing is left behind.

    python tools/soak.py                      # 20 runs of `make demo` (2 gloo processes each)
    python tools/soak.py --inprocess          # 20 runs of fit() in this one process (leaks in
                                              # distadv itself: memory, files, threads)

After every run it counts zombie processes, processes still alive, temporary files (new entries
in the temp folder and /dev/shm, `.tmp-` files in the run) and open file descriptors, and
records memory: the peak RSS of the ranks (launch mode, sampled every 0.2 s) or this process's
RSS (in-process mode). Prints one line per run and a summary: the median memory of the first
and last 5 runs and their ratio. Exit 1 if anything was left behind. Not a test: ~10 min.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from distadv.engine.checkpoint import TMP_MARK  # noqa: E402
from tools.procs import (become_subreaper, cpu_env, launch_cmd, live_descendants,  # noqa: E402
                         reap_orphans, zombies)

TEMP_DIRS = [Path(tempfile.gettempdir()), Path("/dev/shm")]


def temp_entries() -> set:
    """Entries of the machine's temp folders."""
    return {str(p) for d in TEMP_DIRS if d.is_dir() for p in d.iterdir()}


def launch_run(overrides, log) -> tuple:
    """One `accelerate launch` demo run; returns (exit status, peak RSS of the ranks in MiB)."""
    proc = subprocess.Popen(launch_cmd("distadv/train.py", *overrides), env=cpu_env(), cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    peak = 0.0
    while proc.poll() is None:
        rss = 0
        for p in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
            try:
                rss = max(rss, p.memory_info().rss)
            except psutil.Error:
                pass
        peak = max(peak, rss / 2**20)
        time.sleep(0.2)
    return proc.returncode, peak


def inprocess_run(overrides, log) -> tuple:
    """One fit() in this process; returns (exit status, RSS after it in MiB)."""
    from contextlib import redirect_stderr, redirect_stdout

    from distadv.train import main

    with redirect_stdout(log), redirect_stderr(log):
        status = main(overrides)
    gc.collect()
    return status, psutil.Process().memory_info().rss / 2**20


def main() -> int:
    """Run the soak and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--inprocess", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/soak", help="a new folder")
    ap.add_argument("overrides", nargs="*", help="recipe overrides (recipe=demo by default)")
    args = ap.parse_args()
    if args.out.exists():
        sys.exit(f"soak: error: {args.out} exists; pass a new --out (runs are never reused)")
    args.out.mkdir(parents=True)
    become_subreaper()
    if args.inprocess:
        os.environ.setdefault("OMP_NUM_THREADS", "2")
    log = open(args.out / "log.txt", "w")
    temp0, fds0, threads0 = temp_entries(), psutil.Process().num_fds(), threading.active_count()
    mem, bad = [], 0
    for i in range(args.runs):
        run_dir = args.out / f"run{i:02d}"
        overrides = ["recipe=demo", "log.progress=never", f"run_dir={run_dir}", *args.overrides]
        start = time.monotonic()
        status, mib = (inprocess_run if args.inprocess else launch_run)(overrides, log)
        reaped = reap_orphans()
        new_temp = sorted(temp_entries() - temp0)
        tmp_files = [p for p in run_dir.rglob("*") if TMP_MARK in p.name]
        z, alive = zombies(), live_descendants()
        fds, threads = psutil.Process().num_fds(), threading.active_count()
        mem.append(mib)
        left = status != 0 or z or alive or new_temp or tmp_files
        bad += bool(left)
        print(f"run {i + 1:2d}: exit {status} in {time.monotonic() - start:5.1f} s | "
              f"{'peak rank' if not args.inprocess else 'process'} RSS {mib:6.0f} MiB | zombies "
              f"{len(z)} alive {len(alive)} reaped {reaped} | new temp entries {len(new_temp)} "
              f"{new_temp[:3]} run .tmp files {len(tmp_files)} | fds {fds} (start {fds0}) "
              f"threads {threads} (start {threads0})", flush=True)
    first, last = statistics.median(mem[:5]), statistics.median(mem[-5:])
    print(f"memory: median of the first 5 runs {first:.0f} MiB, of the last 5 {last:.0f} MiB, "
          f"ratio {last / first:.3f}; runs that left something behind: {bad}/{args.runs}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
