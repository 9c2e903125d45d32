#!/usr/bin/env python
"""Cost per optimizer step of the training methods, measured side by side in one run.

    python tools/bench_methods.py                       # SmallCNN on Fashion-MNIST shapes
    python tools/bench_methods.py --model preact_resnet18 --data cifar10 --batch 32
    python tools/bench_methods.py --json

Each variant is a real TrainState (synthetic data of the data set's shape: no files needed)
whose whole step (``engine.loop.train_step``: attack, loss, backward, hooks, optimizer) is
timed; the variants take turns, ``--repeats`` rounds of ``--steps`` steps each, and the
median per-step time of each is divided by the plain PGD-AT step's (or TRADES's) of the same
rounds. Goals (issue 13): EMA <= 1.02x, AWP <= 1.15x. The EMA update alone (one fused
``_foreach_lerp_`` and a buffer copy) is also timed on its own, against the plain step.
Issue 15: the single-step methods against PGD-K AT (fgsm_rs, n_fgsm), GradAlign and Free (one
optimizer step = one replay) against FGSM-RS, and one check of the catastrophic-overfitting
guard (PGD-10 + FGSM on its 256 probe images, the snapshot copy) against an FGSM-RS step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from distadv.compose import load_config  # noqa: E402
from distadv.engine.loop import train_step  # noqa: E402
from distadv.engine.setup import make_accelerator  # noqa: E402
from distadv.engine.state import TrainState  # noqa: E402
from distadv.strategies.ema import EMA  # noqa: E402
from distadv.strategies.guard import Guard  # noqa: E402
from tools.machine import machine, machine_line  # noqa: E402

VARIANTS = {                     # name -> (overrides, the baseline it is divided by)
    "pgd_at": ([], None),
    "pgd_at+ema": (["ema.enabled=true"], "pgd_at"),
    "pgd_at+awp": (["awp.enabled=true", "awp.gamma=0.01"], "pgd_at"),
    "trades": (["strategy.name=trades"], None),
    "trades+awp+ema": (["strategy.name=trades", "awp.enabled=true", "ema.enabled=true"], "trades"),
    "fgsm_rs": (["strategy.name=fgsm_rs", "train_attacks.linf.steps=1"], "pgd_at"),
    "n_fgsm": (["strategy.name=n_fgsm", "train_attacks.linf.steps=1"], "pgd_at"),
    "grad_align": (["strategy.name=grad_align", "train_attacks.linf.steps=1"], "fgsm_rs"),
    "free_replay": (["strategy.name=free", "train_attacks.linf.steps=1"], "fgsm_rs"),
    "fgsm_rs+guard": (["strategy.name=fgsm_rs", "train_attacks.linf.steps=1", "guard.enabled=true",
                       "guard.every=0"], "fgsm_rs"),
}


def build(args, extra):
    """A TrainState on synthetic data of ``args.data``'s shape, PGD-``args.k`` at eps 0.1."""
    cfg = load_config(["recipe=fmnist_linf", f"data.name={args.data}", "data.synthetic=true",
                       f"data.synthetic_size={args.batch * 4}", f"data.batch_size={args.batch}",
                       f"model.name={args.model}", f"train_attacks.linf.steps={args.k}",
                       "log.progress=never", "log.tensorboard=false", *extra])
    st = TrainState.create(cfg, make_accelerator(cfg))
    st.method.on_epoch_start(st, 0)
    x, y, _ = next(iter(st.parts.train_dl))
    return st, x.contiguous(memory_format=st.parts.memory_format), y


def main() -> None:
    """Time every variant, print medians and ratios (and JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smallcnn")
    ap.add_argument("--data", default="fashion_mnist")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--k", type=int, default=10, help="PGD steps of the training attack")
    ap.add_argument("--steps", type=int, default=5, help="steps per round")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    states = {name: build(args, extra) for name, (extra, _) in VARIANTS.items()}
    times = {name: [] for name in VARIANTS}
    times["ema_update_only"] = []
    times["guard_check_only"] = []
    ema = next(m for m in states["pgd_at+ema"][0].method.nodes if isinstance(m, EMA))
    gst = states["fgsm_rs+guard"][0]
    guard = next(m for m in gst.method.nodes if isinstance(m, Guard))
    for name, (st, x, y) in states.items():          # warm-up: allocator, first-step setup
        train_step(st, x, y)
    for _ in range(args.repeats):
        for name, (st, x, y) in states.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(st, x, y)
            times[name].append((time.perf_counter() - start) / args.steps)
        start = time.perf_counter()
        for _ in range(args.steps * 20):
            ema.update()
        times["ema_update_only"].append((time.perf_counter() - start) / (args.steps * 20))
        start = time.perf_counter()
        guard._check(gst, None)             # one probe + decision + snapshot (what every N steps costs)
        times["guard_check_only"].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"machine": machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "model": args.model,
           "data": args.data, "batch": args.batch, "k": args.k, "threads": torch.get_num_threads(),
           "params": sum(p.numel() for p in states["pgd_at"][0].raw_model.parameters()),
           "step_ms": {k: round(1000 * v, 3) for k, v in med.items()}, "ratio": {}}
    for name, (_, base) in VARIANTS.items():
        if base:
            out["ratio"][f"{name} / {base}"] = round(med[name] / med[base], 3)
    out["ratio"]["ema_update / pgd_at step"] = round(med["ema_update_only"] / med["pgd_at"], 4)
    out["ratio"]["guard_check / fgsm_rs step"] = round(med["guard_check_only"] / med["fgsm_rs"], 3)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{machine_line(out['machine'])}; {args.model} "
          f"({out['params']:,} parameters) on {args.data}-shaped batches of {args.batch}, "
          f"PGD-{args.k}; medians of {args.repeats} interleaved rounds of {args.steps} steps")
    for k, v in out["step_ms"].items():
        print(f"  {k:18s} {v:10.2f} ms/step")
    for k, v in out["ratio"].items():
        print(f"  {k:28s} {v:.3f}x")


if __name__ == "__main__":
    main()
