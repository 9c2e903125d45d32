#!/usr/bin/env python
"""Speed benchmarks, measured side by side in one run (medians of interleaved repetitions).

    python tools/bench.py --json        # all sections, ~8 min on 2 cores
    python tools/bench.py --json --models preact_resnet18:1 --no-launch   # full width, ~10 min
    python tools/bench.py --json --models basicnet --no-launch   # quick

Per model, precision (fp32, bf16 autocast) and layout (channels_last, distadv's default; and
NCHW, suffix _nchw), on the same batch and the same K:
  train_step_ms, attack_step_ms, at_step_ms, at_bound_ratio = (K*attack + train) / at (>= 0.9)
  reference_step_ms: the field's reference loop (tools/reference_loop.py, fp32 always);
      vs_reference = reference / our AT step (goal >= 3x with bf16)
  pgd_eval_ms vs torchattacks_eval_ms: K-step PGD on an eval-mode model;
      vs_torchattacks = torchattacks fp32 / ours (goal >= 1.0 fp32, >= 2 bf16)
loader_images_per_s: training images/s of the torch, device and ffcv loaders (crop + flip,
CIFAR-shaped uint8, one process); loader_vs_at = that over the images/s the AT step consumes
(the first model, bf16; goal >= 20 for the default loader, device).
Launch sections (2 real gloo processes): collectives_per_step (gradient all-reduces in one
DDP step, from tools/probe_collectives.py; goal 1) and scaling_2proc (training images/s with
2 processes over 1, demo recipe, both on this machine's cores).
The first model's figures are repeated at the top level.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from distadv.attacks import PGD  # noqa: E402
from distadv.models import create_model  # noqa: E402
from distadv.strategies import Adversarial  # noqa: E402
from tools.machine import machine, machine_line  # noqa: E402
from tools.procs import launch_cmd  # noqa: E402
from tools.reference_loop import reference_train_step  # noqa: E402


def _autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def _model(spec: str):
    name, _, width = spec.partition(":")
    return create_model(name, width=float(width)) if width else create_model(name)


def bench_model(spec: str, args) -> dict:
    """All per-model measurements, interleaved rep by rep. Variants: each precision with
    channels_last (distadv's default layout) and with plain NCHW (``<precision>_nchw``).
    The reference loop and torchattacks run as the field runs them: fp32, NCHW."""
    x_nchw = torch.rand(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    k = args.steps
    models, inputs = {}, {}
    for layout in ("cl", "nchw"):
        torch.manual_seed(0)
        m = _model(spec)
        fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
        models[layout] = m.to(memory_format=fmt)
        inputs[layout] = x_nchw.contiguous(memory_format=fmt)
    opts = {key: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for key, m in models.items()}
    strategy = Adversarial(PGD(eps=0.03, alpha=0.0075, steps=k))
    one_step = PGD(eps=0.03, alpha=0.0075, steps=1, random_start=False)
    eval_pgd = PGD(eps=0.03, alpha=0.0075, steps=k)
    ref_model, ref_opt = models["nchw"], opts["nchw"]
    theirs = None
    with contextlib.suppress(ImportError):
        import torchattacks
        theirs = torchattacks.PGD(ref_model, eps=0.03, alpha=0.0075, steps=k, random_start=True)

    def make(prec, layout):
        model, opt, x = models[layout], opts[layout], inputs[layout]

        def train_step():
            model.train()
            with _autocast(prec):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def attack_step():
            model.train()
            with _autocast(prec):
                one_step(model, x, y)

        def at_step():
            model.train()
            with _autocast(prec):
                out = strategy(model, model, x, y)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()

        def pgd_eval():
            model.eval()
            with _autocast(prec):
                eval_pgd(model, x, y)
        return {"train": train_step, "attack": attack_step, "at": at_step, "pgd_eval": pgd_eval}

    variants = {}
    for prec in args.precisions.split(","):
        variants[prec] = make(prec, "cl")
        variants[f"{prec}_nchw"] = make(prec, "nchw")
    shared = {"reference": lambda: reference_train_step(ref_model, ref_opt, x_nchw, y, steps=k)}
    if theirs is not None:
        shared["torchattacks_eval"] = lambda: (ref_model.eval(), theirs(x_nchw, y))
    calls = [((v, n), fn) for v, fns in variants.items() for n, fn in fns.items()]
    calls += [(n, fn) for n, fn in shared.items()]
    for _, fn in calls:                       # warm-up (allocator, oneDNN kernel choice)
        fn()
    times = {key: [] for key, _ in calls}
    for _ in range(args.reps):
        for key, fn in calls:
            times[key].append(_timed(fn))
    med = {key: statistics.median(v) for key, v in times.items()}
    out = {}
    for v in variants:
        m = {n: med[(v, n)] for n in ("train", "attack", "at", "pgd_eval")}
        r = {"train_step_ms": m["train"], "attack_step_ms": m["attack"], "at_step_ms": m["at"],
             "at_bound_ratio": (k * m["attack"] + m["train"]) / m["at"],
             "reference_step_ms": med["reference"], "vs_reference": med["reference"] / m["at"],
             "pgd_eval_ms": m["pgd_eval"]}
        if theirs is not None:
            r["torchattacks_eval_ms"] = med["torchattacks_eval"]
            r["vs_torchattacks"] = med["torchattacks_eval"] / m["pgd_eval"]
        out[v] = {key: round(val, 3) for key, val in r.items()}
    return out


def _env(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    return env


def _launch_cmd(n: int, script: str, *args) -> list:
    if n == 1:
        return [sys.executable, str(ROOT / script), *args]
    return launch_cmd(script, *args, processes=n)


def collectives_per_step(tmp: Path) -> dict:
    """Gradient all-reduces per DDP optimizer step for K = 1 and 10 (2 gloo processes)."""
    out = tmp / "collectives.json"
    env = dict(_env(1), ACCELERATE_USE_CPU="1")
    subprocess.run(_launch_cmd(2, "tools/probe_collectives.py", "--out", str(out), "--k", "1,10",
                               "recipe=demo"), env=env, check=True, capture_output=True)
    c = json.loads(out.read_text())
    return {"K=1": c["1"]["ddp_hook_calls"], "K=10": c["10"]["ddp_hook_calls"],
            "attack_collectives": c["10"]["attack"], "step_ops_K=10": c["10"]["step_ops"]}


def scaling_2proc(tmp: Path, reps: int) -> dict:
    """Training images/s of the demo recipe, 2 processes (1 thread each) over 1 process (2
    threads), median over ``reps`` runs of each, alternated."""
    args = ["recipe=demo", "optim.epochs=2", "early_stop.patience=0", "log.progress=never",
            "log.tensorboard=false"]
    speeds = {1: [], 2: []}
    for i in range(reps):
        for n in (1, 2):
            run = tmp / f"scale{n}_{i}"
            env = dict(_env(2 if n == 1 else 1), ACCELERATE_USE_CPU="1")
            subprocess.run(_launch_cmd(n, "distadv/train.py", *args, f"run_dir={run}"), env=env,
                           check=True, capture_output=True)
            hist = torch.load(run / "checkpoints/latest", weights_only=True)["history"]
            speeds[n].append(hist[-1]["train/images_per_s"])  # epoch 2: after warm-up
    one, two = statistics.median(speeds[1]), statistics.median(speeds[2])
    return {"images_per_s_1proc": round(one, 1), "images_per_s_2proc": round(two, 1),
            "ratio": round(two / one, 3)}


def loader_throughput(tmp: Path, n: int, batch: int, reps: int) -> dict:
    """Training images/s of each loader over ``n`` CIFAR-shaped uint8 images with crop + flip
    (one process, CPU), median over ``reps`` epochs after one warm-up epoch."""
    from dataclasses import replace

    from distadv.data import LoaderSpec, synthetic
    from distadv.data.device import DeviceLoader
    from distadv.engine.loaders import TorchLoader

    train, _, _ = synthetic("cifar10", n)
    spec = LoaderSpec(batch, train=True, augment=True)
    makers = {"device": lambda: DeviceLoader(train, spec),
              "torch": lambda: TorchLoader(train, spec)}
    from distadv.data.generated import MixedLoader, MixSpec, open_set
    from tools.bench_generated import write_noise_set
    gen = [open_set(write_noise_set(tmp / "generated", n), (32, 32, 3), 10)]
    makers["mixed (70 % generated)"] = lambda: MixedLoader(
        train, gen, MixSpec(batch, 0.7, [1.0], True, n, 0), spec)
    try:
        from omegaconf import OmegaConf

        from distadv.config import DataConfig
        from distadv.data import Splits
        from distadv.data.ffcv import FFCVLoader, write_betons
        cfg = OmegaConf.structured(DataConfig(name="cifar10", root=str(tmp), val_size=0))
        paths = write_betons(Splits(train, train, train, None), cfg)
        makers["ffcv"] = lambda: FFCVLoader(paths["train"], replace(spec, num_workers=2))
    except Exception as exc:  # FFCV not installed: report the others
        print(f"bench: ffcv skipped ({type(exc).__name__})", file=sys.stderr)
    out = {}
    for name, make in makers.items():
        loader = make()
        speeds = []
        for epoch in range(reps + 1):
            loader.set_epoch(epoch)
            t = time.perf_counter()
            seen = sum(len(y) for _, y, _ in loader)
            if epoch:
                speeds.append(seen / (time.perf_counter() - t))
        out[name] = round(statistics.median(speeds), 1)
    return out


def main() -> int:
    """Parse arguments, run the sections, print JSON (or a summary)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--models", default="preact_resnet18:0.25,basicnet",
                    help="comma list of name[:width]; the first is reported at the top level")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="K, PGD steps (recipes: 10)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--no-launch", action="store_true", help="skip the multi-process sections")
    ap.add_argument("--loader-images", type=int, default=10000,
                    help="images in the loader benchmark (0 = skip it)")
    args = ap.parse_args()
    out = {"machine": machine(), "batch": args.batch, "steps": args.steps, "reps": args.reps,
           "threads": torch.get_num_threads(), "torch": torch.__version__, "models": {}}
    print(f"bench: {machine_line(out['machine'])}", file=sys.stderr, flush=True)
    if "bf16" in args.precisions.split(",") and not out["machine"]["native_bf16"]:
        # the bf16 figures then measure the emulation, not bf16 (~12x slower than fp32 there)
        print("bench: this CPU has no native bf16 (AVX512-BF16/AMX): the bf16 figures show the "
              "emulation's cost; compare bf16 only on a CPU that has it", file=sys.stderr)
    for spec in args.models.split(","):
        out["models"][spec] = bench_model(spec, args)
    first = out["models"][args.models.split(",")[0]]
    top = first[args.precisions.split(",")[0]]
    out.update({k: top[k] for k in ("train_step_ms", "attack_step_ms", "at_step_ms",
                                    "at_bound_ratio")})
    out["vs_reference"] = {v: first[v]["vs_reference"] for v in first}
    if "vs_torchattacks" in top:
        out["vs_torchattacks"] = {v: first[v]["vs_torchattacks"] for v in first}
    if args.loader_images:
        with tempfile.TemporaryDirectory() as tmp:
            speeds = loader_throughput(Path(tmp), args.loader_images, args.batch, args.reps)
        out["loader_images_per_s"] = speeds
        # the rate at which adversarial training consumes images: the first model, bf16 if run
        at = first.get("bf16", top)["at_step_ms"]
        consume = args.batch / (at / 1e3)
        out["at_images_per_s"] = round(consume, 1)
        out["loader_vs_at"] = {k: round(v / consume, 1) for k, v in speeds.items()}
    if not args.no_launch:
        with tempfile.TemporaryDirectory() as tmp:
            c = collectives_per_step(Path(tmp))
            out["collectives_per_step"] = c["K=10"]
            out["collectives_detail"] = c
            out["scaling_2proc"] = scaling_2proc(Path(tmp), args.reps)
    print(json.dumps(out, indent=2) if args.json else json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
