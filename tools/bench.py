#!/usr/bin/env python
"""Benchmark the adversarial training step against the bound from its own primitives.

    python tools/bench.py --json            # PreActResNet18, batch 128, K=10, fp32 and bf16

For each precision it measures, interleaved rep by rep (so machine noise hits all alike):
  train_step_ms   one optimizer step on clean images (forward, backward, SGD), train mode
  attack_step_ms  one PGD step: forward + input gradient (autograd.grad) + step/project, eval mode
  at_step_ms      one PGD-K adversarial-training step through distadv's strategy and optimizer
and reports medians plus at_bound_ratio = (K * attack_step + train_step) / at_step; the goal is
>= 0.9 (the loop adds at most ~10% over its primitives).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from distadv.attacks import PGD  # noqa: E402
from distadv.models import create_model  # noqa: E402
from distadv.strategies import Adversarial  # noqa: E402


def _autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def bench_precision(args, precision: str) -> dict:
    """Medians (ms) of the three measurements and their ratio for one precision."""
    torch.manual_seed(0)
    model = create_model(args.model, width=args.width) if args.model == "preact_resnet18" \
        else create_model(args.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    attack = PGD(eps=0.03, alpha=0.0075, steps=args.steps)
    strategy = Adversarial(attack)

    def train_step(inp=x):
        with _autocast(precision):
            loss = F.cross_entropy(model(inp), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    one_step = PGD(eps=0.03, alpha=0.0075, steps=1, random_start=False)

    def attack_step():
        with _autocast(precision):
            one_step(model, x, y)

    def at_step():
        with _autocast(precision):
            out = strategy(model, model, x, y)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    model.train()
    for fn in (train_step, attack_step, at_step):  # warm-up (allocator, oneDNN kernels)
        fn()
    times = {"train": [], "attack": [], "at": []}
    for _ in range(args.reps):
        times["train"].append(_timed(train_step))
        times["attack"].append(_timed(attack_step))
        times["at"].append(_timed(at_step))
    med = {k: statistics.median(v) for k, v in times.items()}
    bound = args.steps * med["attack"] + med["train"]
    return {"train_step_ms": round(med["train"], 2), "attack_step_ms": round(med["attack"], 2),
            "at_step_ms": round(med["at"], 2), "at_bound_ratio": round(bound / med["at"], 3),
            "reps": args.reps}


def main() -> int:
    """Parse arguments, run the benchmark, print JSON or a table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--model", default="preact_resnet18")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="K, PGD steps per training step (recipes: 10)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--precisions", default="fp32,bf16")
    args = ap.parse_args()
    out = {"model": args.model, "width": args.width, "batch": args.batch, "steps": args.steps,
           "threads": torch.get_num_threads(), "torch": torch.__version__}
    for p in args.precisions.split(","):
        out[p] = bench_precision(args, p)
    # top-level keys for the default (fp32) run; per-precision figures under "fp32"/"bf16"
    first = out[args.precisions.split(",")[0]]
    out.update({k: first[k] for k in ("train_step_ms", "attack_step_ms", "at_step_ms",
                                      "at_bound_ratio")})
    if "fp32" in out and "bf16" in out:  # side by side in this run
        out["bf16_at_speedup"] = round(out["fp32"]["at_step_ms"] / out["bf16"]["at_step_ms"], 3)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for p in args.precisions.split(","):
            print(p, out[p])
    return 0


if __name__ == "__main__":
    sys.exit(main())
