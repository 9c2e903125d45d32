#!/usr/bin/env python
"""Count the collectives that one adversarial-training step issues, per rank, for several K.

    ACCELERATE_USE_CPU=1 accelerate launch --config_file recipes/accelerate/ddp.yaml \
        tools/probe_collectives.py --out counts.json recipe=demo
    accelerate launch --config_file recipes/accelerate/deepspeed_zero2.yaml \
        tools/probe_collectives.py --out counts.json recipe=demo

The run is built exactly as training builds it (engine.build), then one optimizer step (after
one warm-up step) runs under torch.profiler; every c10d collective the step dispatches is
counted (all-reduce, reduce-scatter, all-gather, broadcast, ...). The attack alone is profiled
too. Under DDP a communication hook also counts gradient buckets. Rank 0 writes JSON:
{"K": {"step": n, "attack": n, "ddp_hook_calls": n}, "engine": ..., "world_size": ...}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from distadv.compose import load_config  # noqa: E402
from distadv.engine.state import TrainState  # noqa: E402
from distadv.engine.loop import train_step  # noqa: E402
from distadv.engine.setup import make_accelerator  # noqa: E402

_COLLECTIVES = ("allreduce", "all_reduce", "reduce_scatter", "_reduce_scatter_base",
                "allgather", "all_gather", "_allgather_base", "broadcast", "reduce_", "alltoall",
                "barrier")


def collectives(prof) -> dict:
    """Collective operations dispatched through c10d in a profile: {op name: calls}."""
    names = [e.name for e in prof.events()
             if e.name.startswith("c10d::") and any(c in e.name for c in _COLLECTIVES)]
    return {n: names.count(n) for n in sorted(set(names))}


def probe(overrides, ks) -> dict:
    """Build the run of ``overrides`` once per K and count one step's collectives."""
    out = {}
    for k in ks:
        cfg = load_config([*overrides, "log.progress=never"])
        for t in cfg.train_attacks.values():
            t.steps = k
        accelerator = make_accelerator(cfg)
        st = TrainState.create(cfg, accelerator)
        r = st.parts
        hook_calls = [0]
        if isinstance(r.model, torch.nn.parallel.DistributedDataParallel):
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

            def counting_hook(state, bucket):
                hook_calls[0] += 1
                return allreduce_hook(state, bucket)
            r.model.register_comm_hook(None, counting_hook)
        strategy = st.method.strategy
        x, y, _ = next(iter(r.train_dl))
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        step = lambda: train_step(st, x, y)
        step()  # warm-up: DDP rebuilds its buckets and DeepSpeed sets up on the first step
        accelerator.wait_for_everyone()
        hook_calls[0] = 0
        with profile(activities=[ProfilerActivity.CPU]) as prof_step:
            step()
        calls = hook_calls[0]
        attack = getattr(strategy, "attack", None)
        with profile(activities=[ProfilerActivity.CPU]) as prof_attack:
            if attack is not None:
                attack(r.attack_model, x, y)
        ops = collectives(prof_step)
        out[str(k)] = {"step": sum(ops.values()), "step_ops": ops,
                       "attack": sum(collectives(prof_attack).values()), "ddp_hook_calls": calls}
        out["engine"] = type(r.model).__name__
        out["world_size"] = accelerator.num_processes
        out["distributed_type"] = str(accelerator.distributed_type.value)
        accelerator.wait_for_everyone()
    return out


def main() -> int:
    """Parse ``--out FILE [--k 1,5] overrides...``, probe, write JSON from rank 0."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", default="1,5")
    args, overrides = ap.parse_known_args()
    result = probe(overrides, [int(k) for k in args.k.split(",")])
    if int(torch.distributed.get_rank() if torch.distributed.is_initialized() else 0) == 0:
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(json.dumps(result))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
