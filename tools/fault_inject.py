"""kill -9 a 2-process CPU training run at random points, resume it, and check that it ends
exactly where an uninterrupted run with the same seed ends.

    python tools/fault_inject.py                              # 10 trials of the demo recipe
    python tools/fault_inject.py --trials 3 optim.epochs=4    # the short version CI runs

First an uninterrupted reference run, which also counts how often rank 0 reaches each crash
point (distadv/engine/faults.py). Then, per trial, a fresh run is killed once and resumed by
rerunning the same command. Kill kinds, in turn:
  checkpoint.rotated  rank 0 dies between moving latest to previous and renaming the new file
  eval.batch          during validation (or the final test)
  train.step          mid-epoch, before a step's backward
  checkpoint.written  the new checkpoint is on disk under its temporary name
  timed               SIGKILL to the launcher and both ranks after a random delay
(for the first four, rank 0 SIGKILLs itself the n-th time it gets there, n random; the launcher
then stops rank 1). A trial is identical when results.json, best.safetensors, the latest
weights and the per-epoch history (minus wall-clock keys) equal the reference's, and no temporary
file is left. Prints one line per trial and "identical: k/N"; exit 0 only if all are.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from distadv.engine.checkpoint import TMP_MARK, load_state, load_weights  # noqa: E402
from tools.procs import (become_subreaper, cpu_env, kill_tree, launch_cmd,  # noqa: E402
                         live_descendants, reap_orphans)

KINDS = ["checkpoint.rotated", "eval.batch", "train.step", "checkpoint.written", "timed"]
CLOCK_KEYS = ("train/images_per_s", "train/epoch_s", "epoch_s")


def without_clocks(results: dict) -> dict:
    """results.json without the wall-clock and memory measurements and the launch's topology
    (they differ between any two runs: the topology names the launch's rendezvous port)."""
    out = {k: v for k, v in results.items() if k not in ("seconds", "memory", "topology")}
    if "autoattack" in out:
        out["autoattack"] = {k: v for k, v in out["autoattack"].items()
                             if k not in ("seconds", "fraction_of_run")}
    return out


def run(overrides, run_dir: Path, log: Path, crash_at: str = "", kill_after: float = 0.0):
    """One launch into ``run_dir``; returns (exit status, seconds). ``kill_after``: SIGKILL the
    launcher and its ranks after that many seconds (if still running)."""
    env = cpu_env(DISTADV_CRASH_AT=crash_at) if crash_at else cpu_env()
    start = time.monotonic()
    with open(log, "a") as out:
        out.write(f"\n=== {crash_at or ''} kill_after={kill_after:.1f}\n")
        out.flush()
        proc = subprocess.Popen(launch_cmd("distadv/train.py", *overrides, f"run_dir={run_dir}"), env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            proc.wait(timeout=kill_after or None)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
    reap_orphans()
    return proc.returncode, time.monotonic() - start


def fingerprint(run_dir: Path) -> dict:
    """What must match the reference: results, best and latest weights, history."""
    latest = load_state(run_dir / "checkpoints/latest")
    history = [{k: v for k, v in h.items() if k not in CLOCK_KEYS} for h in latest["history"]]
    return {"results": without_clocks(json.loads((run_dir / "results.json").read_text())),
            "best": load_weights(run_dir / "checkpoints/best.safetensors"),
            "latest": latest["model"], "history": history}


def differences(a: dict, b: dict) -> list:
    """Names of the parts of two fingerprints that differ."""
    out = [k for k in ("results", "history") if a[k] != b[k]]
    for k in ("best", "latest"):
        if a[k].keys() != b[k].keys() or not all(torch.equal(a[k][n], b[k][n]) for n in a[k]):
            out.append(f"{k} weights")
    return out


def leftovers(run_dir: Path) -> list:
    """Temporary or quarantined files left in a run directory."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if TMP_MARK in p.name or p.name == "latest.corrupt")


def main() -> int:
    """Parse arguments, run the reference and the trials, print the summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="seeds the choice of kill points")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/fault_inject",
                    help="a new folder for the runs and log.txt")
    ap.add_argument("overrides", nargs="*", help="recipe overrides (recipe=demo by default)")
    args = ap.parse_args()
    if args.out.exists():
        sys.exit(f"fault_inject: error: {args.out} exists; pass a new --out (runs are never "
                 "reused)")
    args.out.mkdir(parents=True)
    become_subreaper()
    overrides = ["recipe=demo", "log.progress=never", *args.overrides]
    log = args.out / "log.txt"
    counts_file = args.out / "points.txt"
    rc, ref_s = run(overrides, args.out / "reference", log, f"count:{counts_file}")
    if rc != 0:
        sys.exit(f"fault_inject: error: the reference run failed ({rc}); see {log}")
    counts = Counter(counts_file.read_text().split())
    ref = fingerprint(args.out / "reference")
    print(f"reference: {ref['results']['epochs_run']} epochs in {ref_s:.1f} s; rank 0 reached "
          + ", ".join(f"{k} x{counts[k]}" for k in KINDS[:-1]), flush=True)
    rng = random.Random(args.seed)
    identical = 0
    for i in range(args.trials):
        kind = KINDS[i % len(KINDS)]
        run_dir = args.out / f"trial{i:02d}"
        if kind == "timed":
            point = f"after {rng.uniform(0.1, 0.9) * ref_s:.1f} s"
            rc, s = run(overrides, run_dir, log, kill_after=float(point.split()[1]))
        else:
            n = rng.randint(1, counts[kind])
            point = f"{kind} #{n}/{counts[kind]}"
            rc, s = run(overrides, run_dir, log, f"{kind}:{n}")
        killed = rc != 0
        left = [f"{f} e{load_state(run_dir / 'checkpoints' / f)['epoch']}"
                for f in ("latest", "previous") if (run_dir / "checkpoints" / f).is_file()]
        rc2, s2 = run(overrides, run_dir, log)
        diff = ["resume failed"] if rc2 != 0 else differences(fingerprint(run_dir), ref)
        diff += [f"left behind: {', '.join(leftovers(run_dir))}"] if leftovers(run_dir) else []
        diff += ["not killed"] if not killed else []
        identical += not diff
        print(f"trial {i + 1:2d}: kill at {point:28s} exit {rc:3d} after {s:5.1f} s, left "
              f"{', '.join(left) or 'no state':22s}; resumed in {s2:5.1f} s: "
              f"{'identical' if not diff else 'DIFFERENT: ' + '; '.join(diff)}", flush=True)
    stray = [p for p in live_descendants()]
    print(f"identical: {identical}/{args.trials}; processes left running: {len(stray)}")
    return 0 if identical == args.trials and not stray else 1


if __name__ == "__main__":
    sys.exit(main())
