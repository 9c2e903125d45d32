#!/usr/bin/env python
"""Time to robustness: the wall time each training method needs before its model first reaches a
robust accuracy R, on the real Fashion-MNIST at eps 0.1, side by side in one run on one model.

    python tools/time_to_robust.py                         # ~75 min at 1 thread; BENCHMARKS.md "Issue 15"
    python tools/time_to_robust.py --epochs 6 --aa-examples 500 --methods pgd10,fgsm_rs
    python tools/time_to_robust.py --quick --out /tmp/ttr  # a smoke test of the script, not evidence

Methods, all SmallCNN, batch 128, the same one-cycle LR schedule (peak 0.05 at 40 %), the
same training split: the reference loop (``tools/reference_loop.py``: Rice et al.'s pattern, PGD-10,
fp32, backward into the weights at every attack step); distadv's PGD-10 AT in fp32 (and in
bf16 + channels_last where the CPU has native bf16: on an AVX2-only CPU bf16 autocast is ~12x
slower than fp32, so the row is skipped and says so); ``fgsm_rs``, ``n_fgsm`` and ``free``
(m = 4, its epochs divided by 4) from their fmnist recipes, each with the guard on.

Measurement: every run keeps each epoch's weights (``log.keep_epochs``). The training time of an
epoch is the loop's own wall time (attack, step, the guard's probes: ``train/epoch_s`` plus the
guard's epoch-end check); validation and the measurement below are excluded. After all runs,
each epoch's model is attacked with the official AutoAttack (APGD-CE + APGD-T, the package's
budgets) on the same --aa-examples validation images; R = 95 % of PGD-10 AT's best epoch there.
Time to R = the training time up to the first epoch at or above R. The final model of each run
is also attacked on the first --final-examples test images (clean and AutoAttack). Goals (issue
15): the best single-step method reaches R in <= 1/3 of distadv PGD-10's time and <= 1/6 of the
reference loop's, and its final AutoAttack is within 2 points of PGD-10's.
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

from distadv.attacks.autoattack import AutoAttack  # noqa: E402
from distadv.compose import load_config  # noqa: E402
from distadv.data import build_splits  # noqa: E402
from distadv.data.base import unit_floats  # noqa: E402
from distadv.engine import checkpoint as ck  # noqa: E402
from distadv.engine.build import model_for  # noqa: E402
from distadv.engine.fit import fit  # noqa: E402
from distadv.engine.optim import build_optimizer, build_scheduler  # noqa: E402
from distadv.errors import UserError  # noqa: E402
from distadv.engine.precision import native_bf16  # noqa: E402
from tools.cli import run_cli  # noqa: E402
from tools.machine import machine, machine_line  # noqa: E402
from tools.reference_loop import reference_train_step  # noqa: E402

EPS = 0.1
PGD10 = ["recipe=fmnist_linf", "train_attacks.linf.steps=10", "train_attacks.linf.alpha=0.025"]
METHODS = {   # name -> (label, overrides); epochs are set per method in main
    "pgd10": ("distadv PGD-10 AT, fp32", [*PGD10, "runtime.precision=fp32"]),
    "pgd10_bf16": ("distadv PGD-10 AT, bf16 + channels_last",
                   [*PGD10, "runtime.precision=bf16", "runtime.channels_last=true"]),
    "fgsm_rs": ("fgsm_rs + guard", ["recipe=fmnist_fgsm_rs"]),
    "n_fgsm": ("n_fgsm + guard", ["recipe=fmnist_n_fgsm"]),
    "free": ("free (m=4) + guard", ["recipe=fmnist_free"]),
}
SINGLE_STEP = ("fgsm_rs", "n_fgsm", "free")


def common(args, epochs: int, out: Path, name: str) -> list:
    """The overrides every distadv run shares: the schedule, the validation, the kept epochs."""
    o = [f"optim.epochs={epochs}", "optim.schedule=onecycle", "optim.lr=0.05",
         "optim.pct_start=0.4", f"data.val_size={args.val_size}", "~eval_attacks.pgd_l2",
         "log.keep_epochs=true", "log.progress=never", "early_stop.patience=0",
         f"data.test_size={args.final_examples}", "autoattack.enabled=false",
         f"runs_root={out}", f"name={name}", "strategy.eps_warmup_epochs=0"]
    if args.quick:
        o += ["runtime.max_steps_per_epoch=6", "guard.every=3", "guard.examples=32"]
    return o


def run_distadv(args, name: str, overrides: list, epochs: int, out: Path) -> dict:
    """Train one method with distadv's fit; its per-epoch training seconds."""
    cfg = load_config([*overrides, *common(args, epochs, out, name)])
    results = fit(cfg)
    progress = json.loads((out / name / "progress.json").read_text())
    seconds = [h["train/epoch_s"] + h.get("guard/check_s", 0.0) for h in progress["history"]]
    return {"epoch_s": seconds, "cfg": cfg, "guard": results.get("guard"),
            "weights": [out / name / "checkpoints" / f"epoch-{e:03d}.safetensors"
                        for e in range(1, len(seconds) + 1)]}


def run_reference(args, epochs: int, out: Path) -> dict:
    """The reference loop over the same split, model, optimizer and schedule as PGD-10 AT."""
    cfg = load_config([*PGD10, *common(args, epochs, out, "reference")])
    splits = build_splits(cfg.data)
    torch.manual_seed(cfg.seed)
    model = model_for(cfg, splits.info)
    batch = cfg.data.batch_size
    steps = len(splits.train) // batch
    if args.quick:
        steps = 6
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, steps)
    folder = out / "reference" / "checkpoints"
    folder.mkdir(parents=True)
    seconds, weights = [], []
    for epoch in range(epochs):
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(epoch))
        start = time.perf_counter()
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            x, y = unit_floats(splits.train.images[idx]), splits.train.labels[idx]
            reference_train_step(model, opt, x, y, eps=EPS, alpha=0.025, steps=10)
            sched.step()
        seconds.append(time.perf_counter() - start)
        path = folder / f"epoch-{epoch + 1:03d}.safetensors"
        ck.save_weights(path, model.state_dict())
        weights.append(path)
        print(f"reference loop: epoch {epoch + 1}/{epochs} {seconds[-1]:.0f} s", flush=True)
    return {"epoch_s": seconds, "cfg": cfg, "guard": None, "weights": weights}


def autoattack(cfg, info, path: Path, x, y, quick: bool) -> dict:
    """Clean and APGD-CE + APGD-T accuracy of the weights at ``path`` on (x, y); seconds."""
    model = model_for(cfg, info)
    model.load_state_dict(ck.load_weights(path))
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    aa = AutoAttack(norm="linf", eps=EPS, components=("apgd-ce", "apgd-t"),
                    **({"n_iter": 5, "target_classes": 2} if quick else {}))
    x_adv = aa(model, x, y)
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    return {"clean": clean, "aa": robust, "seconds": time.perf_counter() - start}


def main(args) -> None:
    """Train every method, attack every epoch, print the table and write the JSON."""
    out = Path(args.out)
    if out.exists():
        raise UserError(f"--out {out} exists; remove it or choose another folder (a benchmark "
                        "never reuses old runs)")
    out.mkdir(parents=True)
    capability = torch.backends.cpu.get_cpu_capability()
    wanted = args.methods.split(",")
    unknown = [m for m in wanted if m not in ("reference", *METHODS)]
    if unknown:
        raise UserError(f"unknown --methods {unknown}; choose from reference, {', '.join(METHODS)}")
    skipped = {}
    if "pgd10_bf16" in wanted and not native_bf16("cpu") and not args.force_bf16:
        wanted.remove("pgd10_bf16")
        skipped["pgd10_bf16"] = (f"CPU capability {capability} has no native bf16 (AVX512-BF16/"
                                 "AMX): bf16 autocast ran ~12x slower than fp32 on such a CPU; "
                                 "--force-bf16 runs it anyway")
    runs = {}
    for name in wanted:
        epochs = max(1, args.epochs // 4) if name == "free" else args.epochs
        print(f"== {name}: {epochs} epoch(s)", flush=True)
        runs[name] = (run_reference(args, epochs, out) if name == "reference" else
                      run_distadv(args, name, METHODS[name][1], epochs, out))
    # The measurement, after all training (so no run shares the cores with it).
    cfg = runs[wanted[0]]["cfg"]
    splits = build_splits(cfg.data)
    n = min(args.aa_examples, len(splits.val))
    xv, yv = unit_floats(splits.val.images[:n]), splits.val.labels[:n]
    m = min(args.final_examples, len(splits.test))
    xt, yt = unit_floats(splits.test.images[:m]), splits.test.labels[:m]
    report = {"machine": machine(), "cpu_capability": capability, "threads": torch.get_num_threads(),
              "epochs": args.epochs, "aa_examples": n, "final_examples": m, "skipped": skipped,
              "methods": {}}
    for name, r in runs.items():
        curve, total = [], 0.0
        for e, (sec, path) in enumerate(zip(r["epoch_s"], r["weights"]), start=1):
            total += sec
            point = autoattack(r["cfg"], splits.info, path, xv, yv, args.quick)
            curve.append({"epoch": e, "train_s": total, **point})
            print(f"{name} epoch {e}: train {total:.0f} s, val clean {point['clean']:.3f} "
                  f"AutoAttack {point['aa']:.3f} ({point['seconds']:.0f} s to measure)", flush=True)
        final = autoattack(r["cfg"], splits.info, r["weights"][-1], xt, yt, args.quick)
        guard = r["guard"] or {}
        report["methods"][name] = {
            "label": "reference loop (Rice et al.'s pattern), PGD-10, fp32" if name == "reference"
            else METHODS[name][0], "curve": curve, "final": final, "epoch_train_s": r["epoch_s"],
            "guard_fired": guard.get("fired"), "guard_events": guard.get("events", [])}
    _times_to_r(report)
    (out / "time_to_robust.json").write_text(json.dumps(report, indent=1))
    _print(report)


def _times_to_r(report: dict) -> None:
    """R, each method's time to R, and the goals' ratios (in place)."""
    meth = report["methods"]
    if "pgd10" not in meth:
        return
    best = max(p["aa"] for p in meth["pgd10"]["curve"])
    r = 0.95 * best
    report["R"], report["pgd10_best_aa"] = r, best
    for v in meth.values():
        hit = next((p for p in v["curve"] if p["aa"] >= r), None)
        v["time_to_R"] = hit["train_s"] if hit else None
        v["epoch_to_R"] = hit["epoch"] if hit else None
    fast = [k for k in SINGLE_STEP if k in meth and meth[k]["time_to_R"] is not None]
    if not fast or meth["pgd10"]["time_to_R"] is None:
        return
    top = min(fast, key=lambda k: meth[k]["time_to_R"])
    goals = {"best_single_step": top,
             "vs_pgd10": meth[top]["time_to_R"] / meth["pgd10"]["time_to_R"],
             "final_aa_gap_points": 100 * (meth["pgd10"]["final"]["aa"] - meth[top]["final"]["aa"])}
    if "reference" in meth and meth["reference"]["time_to_R"]:
        goals["vs_reference"] = meth[top]["time_to_R"] / meth["reference"]["time_to_R"]
    report["goals"] = goals


def _print(report: dict) -> None:
    print(f"\n{machine_line(report['machine'])}; "
          f"AutoAttack (APGD-CE + APGD-T) on {report['aa_examples']} validation images per epoch, "
          f"final on {report['final_examples']} test images")
    if "R" in report:
        print(f"R = 95 % of PGD-10 AT's best = {report['R']:.3f} (best {report['pgd10_best_aa']:.3f})")
    print("| method | epochs | time to R (s) | epoch | train s/epoch (median) | final clean | "
          "final AA | guard fired |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, v in report["methods"].items():
        per = statistics.median(v["epoch_train_s"])
        t = v.get("time_to_R")
        print(f"| {v['label']} | {len(v['curve'])} | {'never' if t is None else f'{t:.0f}'} | "
              f"{v.get('epoch_to_R') or '-'} | {per:.0f} | {100 * v['final']['clean']:.1f} | "
              f"{100 * v['final']['aa']:.1f} | "
              f"{'-' if v['guard_fired'] is None else v['guard_fired']} |")
    for k, why in report["skipped"].items():
        print(f"skipped {k}: {why}")
    g = report.get("goals")
    if g:
        print(f"best single-step: {g['best_single_step']}: {g['vs_pgd10']:.3f}x PGD-10's time "
              f"(goal <= 0.333)" + (f", {g['vs_reference']:.3f}x the reference loop's (goal <= "
                                    f"0.167)" if "vs_reference" in g else "") +
              f"; final AutoAttack {g['final_aa_gap_points']:+.1f} points below PGD-10's (goal <= 2)")


def parse(argv=None):
    """Command-line arguments."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/time_to_robust")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of each method (free: / 4)")
    ap.add_argument("--methods", default="reference,pgd10,pgd10_bf16,fgsm_rs,n_fgsm,free")
    ap.add_argument("--aa-examples", type=int, default=200, help="validation images per epoch")
    ap.add_argument("--final-examples", type=int, default=300, help="test images, final model")
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--force-bf16", action="store_true")
    ap.add_argument("--quick", action="store_true", help="6 steps per epoch, weak AutoAttack")
    return ap.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_cli(lambda: main(parse())))
