#!/usr/bin/env python
"""Generated data at scale: per-rank peak RSS and training images/s against the size of the
generated set, 2 ranks side by side in one run, and the mixed loader's sampling rate against
the adversarial-training step's consumption.

    python tools/bench_generated.py --sizes 0,100000,1000000            # BENCHMARKS.md
    python tools/bench_generated.py --sizes 0,1000000 --check 0.10      # CI: exit 1 past +10 %

Each size trains the same run (BasicNet, PGD-7 adversarial training on CIFAR-shaped data, 2
gloo ranks, batch 256, 3 epochs of the same step count); size 0 is the run without data.extra.
A size > 0 writes a set of random pixels (3 GB per million images) under --dir first (kept,
reused by later calls). Peak RSS is each rank's VmHWM from /proc at the end of training
(results.json: memory.peak_rss_mib; the worst of --reps runs); images/s is the median
over epochs 2-3 (and over the --reps runs, which alternate between the sizes).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.machine import machine, machine_line  # noqa: E402
from tools.procs import cpu_env, launch_cmd  # noqa: E402

BATCH, STEPS, VAL = 256, 40, 256
# 2 * synthetic_size - val_size = STEPS * BATCH real training images: the plain run and the
# mixed one (epoch = the training split's size) take the same number of steps
RUN = ["recipe=basic_linf", "data.synthetic=true", f"data.synthetic_size={(STEPS * BATCH + VAL) // 2}",
       f"data.val_size={VAL}", f"data.batch_size={BATCH}", "data.eval_batch_size=256",
       "data.test_size=256", "data.loader=device", "optim.epochs=3", "optim.milestones=[100]",
       "train_attacks.linf.steps=7", "eval_attacks={}", "early_stop.metric=natural",
       "autoattack.enabled=false", "log.progress=never", "log.tensorboard=false"]


def write_noise_set(path: Path, n: int) -> Path:
    """A CIFAR-shaped set of ``n`` random images at ``path`` (written once, then reused)."""
    from distadv.data.generated import SetWriter
    if (path / "manifest.json").is_file():
        return path
    rng = np.random.default_rng(0)
    chunk = 20_000

    def chunks():
        for i in range(0, n, chunk):
            k = min(chunk, n - i)
            yield rng.integers(0, 256, (k, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, k)
    SetWriter(path, n, (32, 32, 3), 10, 1_000_000, {"generator": "noise"}).write_all(chunks())
    return path


def train_2ranks(run_dir: Path, extra: list) -> dict:
    """One 2-rank run; returns its per-rank peak RSS and median images/s of epochs 2-3."""
    r = subprocess.run(launch_cmd("distadv/train.py", *RUN, f"run_dir={run_dir}", *extra),
                       env=cpu_env(), capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"training failed ({r.returncode}):\n{r.stderr[-3000:]}")
    res = json.loads((run_dir / "results.json").read_text())
    hist = json.loads((run_dir / "progress.json").read_text())["history"]
    return {"peak_rss_mib": res["memory"]["peak_rss_mib"],
            "images_per_s": round(statistics.median(h["train/images_per_s"] for h in hist[1:]), 1)}


def sampling_rates(set_dir: Path, reps: int = 5) -> dict:
    """Images/s of the mixed loader (batch 256, 179 generated) and of the plain device loader
    on the same real images, crop + flip on the CPU, 1 process: medians of ``reps``
    interleaved epochs of 20 batches after a warm-up epoch."""
    from distadv.data import LoaderSpec, synthetic
    from distadv.data.device import DeviceLoader
    from distadv.data.generated import MixedLoader, MixSpec, open_set
    real, _, _ = synthetic("cifar10", 20 * BATCH)
    spec = LoaderSpec(BATCH, train=True, augment=True)
    gen = [open_set(set_dir, (32, 32, 3), 10)]
    loaders = {"mixed": MixedLoader(real, gen, MixSpec(BATCH, 0.7, [1.0], True, 20 * BATCH, 0), spec),
               "device": DeviceLoader(real, spec)}
    rates = {k: [] for k in loaders}
    for epoch in range(reps + 1):
        for name, loader in loaders.items():
            loader.set_epoch(epoch)
            t = time.perf_counter()
            n = sum(len(y) for _, y, _ in loader)
            if epoch:
                rates[name].append(n / (time.perf_counter() - t))
    return {k: round(statistics.median(v), 1) for k, v in rates.items()}


def main() -> int:
    """Run every size, print one JSON object; with --check, exit 1 if a rank's peak RSS
    exceeds the plain run's by more than the given fraction."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="0,100000,1000000", help="generated images; 0 = no extra")
    ap.add_argument("--dir", type=Path, help="where the sets are written (default: a temp dir)")
    ap.add_argument("--check", type=float, help="fail if peak RSS grows past this fraction")
    ap.add_argument("--reps", type=int, default=1, help="runs per size, interleaved")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = tempfile.TemporaryDirectory()
    root = args.dir or Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    out = {"machine": machine(), "cpu": torch.backends.cpu.get_cpu_capability(), "ranks": 2,
           "batch": BATCH,
           "steps_per_epoch": STEPS, "sizes": {}}
    extras = {n: [] if n == 0 else [f"data.extra={write_noise_set(root / f'noise_{n}', n)}"]
              for n in sizes}
    runs_of = {n: [] for n in sizes}
    for rep in range(args.reps):          # interleaved: the machine's drift hits every size
        for n in sizes:
            with tempfile.TemporaryDirectory() as runs:
                runs_of[n].append(train_2ranks(Path(runs) / "run", extras[n]))
            print(f"bench_generated: {n} images, rep {rep + 1} ({machine_line(out['machine'])}): "
                  f"{runs_of[n][-1]}",
                  file=sys.stderr, flush=True)
    for n, rs in runs_of.items():          # the worst peak, the median speed
        out["sizes"][n] = {"peak_rss_mib": [max(r["peak_rss_mib"][k] for r in rs) for k in range(2)],
                           "images_per_s": round(statistics.median(r["images_per_s"] for r in rs), 1),
                           "runs": len(rs)}
    base = out["sizes"].get(0)
    if base:
        for n, r in out["sizes"].items():
            r["rss_vs_plain"] = [round(a / b, 3) for a, b in zip(r["peak_rss_mib"], base["peak_rss_mib"])]
            r["speed_vs_plain"] = round(r["images_per_s"] / base["images_per_s"], 3)
    largest = max(sizes)
    if largest and args.check is None:      # CI's memory check does not need the loader rates
        # each rank runs its own loader: compare one loader with one rank's consumption
        rates = sampling_rates(root / f"noise_{largest}")
        consume = max(r["images_per_s"] for r in out["sizes"].values()) / out["ranks"]
        out["mixed_loader_images_per_s"] = rates["mixed"]
        out["device_loader_images_per_s"] = rates["device"]
        out["at_images_per_s_per_rank"] = round(consume, 1)
        out["mixed_loader_vs_at"] = round(rates["mixed"] / consume, 1)
        # the loader runs between steps: its extra time per image over the plain loader's,
        # as a share of a step's time per image, is what mixing can cost the training speed
        extra = 1 / rates["mixed"] - 1 / rates["device"]
        out["mixed_extra_share_of_step"] = round(extra * consume, 4)
    print(json.dumps(out, indent=2))
    if args.check is not None and base:
        worst = max(max(r["rss_vs_plain"]) for r in out["sizes"].values())
        if worst > 1 + args.check:
            print(f"bench_generated: peak RSS {worst:.3f}x the plain run's (limit "
                  f"{1 + args.check:.2f}x)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
