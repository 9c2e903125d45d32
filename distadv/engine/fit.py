"""fit(cfg): data -> model -> strategy -> prepare -> epochs (train, validate, early stop,
checkpoint, log) -> test of the best checkpoint -> results.json."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict

import torch
from omegaconf import OmegaConf

from ..data import build_splits
from ..errors import RunDirError
from ..eval.crosscheck import crosscheck
from ..eval.runner import EvalOptions, evaluate
from ..eval.suites import seed_attacks
from . import checkpoint as ck
from .faults import main_writes
from .loop import train_epoch
from .report import results_table
from .rundir import inspect, paths, run_dir_of
from .precision import with_run_precision
from .setup import broadcast_buffers, check_devices, describe, make_accelerator, peak_rss_per_rank
from .state import TrainState
from .topology import rank_topology, topology_line
from .trackers import check_installed, open_tracking


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The RNG seed of one rank's epoch. Reseeding at every epoch start makes a resumed run
    draw exactly the random starts, crops and MAT choices of an uninterrupted one, without
    carrying RNG state across world sizes."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)


def fit(cfg) -> Dict:
    """Train, validate, early-stop and test one run; returns the results dict."""
    requested = cfg.runtime.precision
    cfg = with_run_precision(cfg)     # 'auto' -> bf16/fp32 here; every reader sees the result
    accelerator = make_accelerator(cfg)
    check_devices(accelerator, cfg)   # e.g. sync_bn without GPUs: refused before any write
    main = accelerator.is_main_process
    status, run_dir = inspect(run_dir_of(cfg), cfg)   # read-only on every rank: refuses early
    accelerator.wait_for_everyone()  # every rank has looked before rank 0 creates anything
    p = paths(run_dir)
    if status == "finished":
        results = json.loads(p["results"].read_text())
        if main:
            print(f"{run_dir} is already finished; results:\n{results_table(results)}")
        return results

    splits = build_splits(cfg.data, with_extra=True)   # data errors also come before any write
    check_installed(cfg.log)                         # so does a tracker not installed here
    main_writes(accelerator, lambda: _prepare(p, run_dir, cfg), f"rank 0 could not prepare {run_dir}")

    saved = _resume_state(p, accelerator) if status == "resume" else None
    st = TrainState.create(cfg, accelerator, splits, saved, p)
    start_epoch = st.epoch
    val_attacks = seed_attacks(cfg)                  # the `seed` suite's attacks
    opened = {}   # log.trackers on rank 0; a store that fails stops every rank together
    main_writes(accelerator, lambda: opened.update(t=open_tracking(cfg, p, main, start_epoch,
                                                                   st.history)),
                "rank 0 could not start the trackers")
    tracker = opened.get("t") or open_tracking(cfg, p, False, start_epoch, st.history)
    progress = main and (cfg.log.progress == "always" or
                         (cfg.log.progress == "auto" and sys.stderr.isatty()))
    topo = rank_topology(accelerator.num_processes)   # every rank: one small all-gather
    if main:
        print(f"distadv: {cfg.recipe} -> {run_dir} ({status}, epoch {start_epoch}/"
              f"{cfg.optim.epochs}, {accelerator.num_processes} process(es), "
              f"{accelerator.device}, {cfg.runtime.precision}"
              f"{' (runtime.precision=auto)' if requested == 'auto' else ''})", flush=True)
        if topo:
            print(topology_line(topo), flush=True)

    epochs_this_session = 0
    for epoch in range(start_epoch, cfg.optim.epochs):
        # Every rank computes the same decision from gathered metrics; the trigger (one
        # all-reduce per epoch) makes "all ranks stop together" hold even if they disagreed.
        if st.stopper.should_stop:
            accelerator.set_trigger()
        if accelerator.check_trigger():
            break
        if cfg.runtime.max_epochs_per_session and epochs_this_session >= cfg.runtime.max_epochs_per_session:
            break
        _run_epoch(st, epoch, val_attacks, tracker, progress)
        epochs_this_session += 1
    history = st.history
    finished = st.stopper.should_stop or (history and history[-1]["epoch"] >= cfg.optim.epochs)
    if not finished:
        tracker.close()
        if main:
            print(f"distadv: stopped after epoch {history[-1]['epoch'] if history else 0}; "
                  f"rerun the same command to resume from {p['latest']}")
        return {"finished": False}
    return _final_test(st, val_attacks, tracker, topo)


def _run_epoch(st: TrainState, epoch: int, val_attacks, tracker, progress: bool) -> None:
    """Train epoch ``epoch`` (0-based), validate the method's eval model, early-stop,
    checkpoint and log."""
    cfg, accelerator = st.cfg, st.accelerator
    epoch_start = time.perf_counter()
    st.epoch = epoch
    torch.manual_seed(epoch_seed(cfg.seed, epoch, accelerator.process_index))
    st.method.on_epoch_start(st, epoch)
    st.parts.train_dl.set_epoch(epoch)
    lr = st.optimizer.param_groups[0]["lr"]
    tr = train_epoch(st, progress)
    model = st.eval_model()
    broadcast_buffers(model)                 # every shard scored with rank 0's BN stats
    main = accelerator.is_main_process
    metric = cfg.early_stop.metric
    val, images = _validate(st, model, val_attacks)
    record = {"epoch": epoch + 1, "lr": lr, **{f"train/{k}": v for k, v in tr.items()},
              **{f"val/{k}": v for k, v in val.items()}}
    if st.method.after_validation(st, record):   # the weights were replaced (a rollback)
        model = st.eval_model()
        broadcast_buffers(model)
        val, images = _validate(st, model, val_attacks)
        record.update({f"val/{k}": v for k, v in val.items()})
    improved = st.stopper.update(val[metric], epoch + 1)
    record["epoch_s"] = time.perf_counter() - epoch_start   # train + validation
    st.history.append(record)
    st.method.on_epoch_end(st, record)
    # Checkpoint on disk before anyone goes on; if rank 0 could not write it (disk full:
    # latest/previous intact), all stop.
    st.save_epoch(improved)
    st.epoch = epoch + 1
    notes = st.method.notes()                # drained on every rank, written by rank 0
    if main:
        tracker.scalars(epoch + 1, {k: v for k, v in record.items() if k != "epoch"})
        tracker.adversarial_grid(epoch + 1, images)
        for line in notes:
            tracker.text("guard", epoch + 1, line)
        print(_epoch_line(record) + (" *" if improved else ""), flush=True)


def _validate(st: TrainState, model, val_attacks):
    """Clean and attacked accuracy of ``model`` on the validation split (and rank 0's
    adversarial image grid)."""
    cfg, main = st.cfg, st.accelerator.is_main_process
    metric = cfg.early_stop.metric
    opts = EvalOptions(cfg.runtime.max_steps_per_epoch, cfg.log.image_grid if main else 0,
                       metric if metric in val_attacks else None, st.parts.memory_format)
    return evaluate(model, st.parts.val_dl, val_attacks, st.accelerator,
                    st.parts.splits.info.num_classes, opts)


def _prepare(p, run_dir, cfg) -> None:
    """Rank 0, before anything else is written: the checkpoint folder, temporaries of a killed
    writer removed, config.yaml (once)."""
    try:
        p["checkpoints"].mkdir(parents=True, exist_ok=True)
        for f in ck.remove_stale_temporaries(p["checkpoints"]) + ck.remove_stale_temporaries(run_dir):
            print(f"distadv: removed {f.name}, left by a writer that was killed", flush=True)
        if not p["config"].is_file():
            ck.atomic_write(p["config"], OmegaConf.to_yaml(cfg).encode())
    except OSError as exc:       # e.g. permission denied (disk full is a DiskFullError)
        raise RunDirError(f"cannot write {run_dir}: {exc.strerror}; choose another "
                          "runs_root= or name=") from None


def _resume_state(p, accelerator) -> dict:
    """The newest intact training state (``latest``, else ``previous``), loaded on every rank.
    A damaged ``latest`` is reported and, once every rank has read, moved aside by rank 0 as
    ``latest.corrupt`` (kept for inspection; never rotated into ``previous``)."""
    state, source, problems = ck.load_resume_state(p["latest"], p["previous"])
    if accelerator.is_main_process:
        for line in problems:
            print(f"distadv: warning: {line}; resuming from {source.name} (epoch "
                  f"{state['epoch']})", flush=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and source != p["latest"] and p["latest"].exists():
        os.replace(p["latest"], p["latest"].with_name("latest.corrupt"))
    return {**state, "source": source}


def _epoch_line(r: Dict) -> str:
    """One console line per epoch."""
    val = " ".join(f"{k[4:]} {v:.3f}" for k, v in r.items() if k.startswith("val/") and k != "val/count")
    return (f"epoch {r['epoch']:3d} | lr {r['lr']:.4g} | train loss {r['train/loss']:.4f} acc "
            f"{r['train/acc']:.3f} | val {val} | {r['train/images_per_s']:.0f} img/s")


def _final_test(st: TrainState, attacks, tracker, topology) -> Dict:
    """Evaluate the best checkpoint once on the test split, cross-check it with AutoAttack
    (``eval/crosscheck.py``) and write results.json."""
    cfg, accelerator, r, p = st.cfg, st.accelerator, st.parts, st.paths
    stopper, history = st.stopper, st.history
    dist = describe(accelerator, r.model, cfg.runtime.precision)
    memory = {"peak_rss_mib": peak_rss_per_rank(accelerator)}   # each rank, end of training
    st.eval_module().load_state_dict(ck.load_weights(p["best"]))  # the eval model's tensors
    model = st.eval_model()
    torch.manual_seed(epoch_seed(cfg.seed, 10**6, accelerator.process_index))
    broadcast_buffers(model)
    start = time.perf_counter()
    test, _ = evaluate(model, r.test_dl, attacks, accelerator, r.splits.info.num_classes,
                       EvalOptions(memory_format=r.memory_format))
    seconds = {"epochs": sum(h.get("epoch_s", 0.0) for h in history),
               "test": time.perf_counter() - start}
    best = next(h for h in history if h["epoch"] == stopper.best_epoch)
    results = {
        "recipe": cfg.recipe, "best_epoch": stopper.best_epoch, "epochs_run": history[-1]["epoch"],
        "stopped_early": bool(stopper.should_stop and history[-1]["epoch"] < cfg.optim.epochs),
        "early_stop_metric": cfg.early_stop.metric, "world_size": dist["world_size"],
        "distributed": dist, "topology": topology,
        "test": {k: v for k, v in test.items() if k != "count"}, "test_examples": test["count"],
        "val_best": {k[4:]: v for k, v in best.items() if k.startswith("val/") and k != "val/count"},
        "val_examples": best["val/count"],
    }
    results.update(st.method.progress())     # the guard's events, if it ran
    results.update(_checked(cfg, accelerator, r, p, results["test"], seconds))
    results["memory"] = memory       # a measurement, like "seconds": differs between runs
    main_writes(accelerator, lambda: ck.write_json(p["results"], results),
                "rank 0 could not write results.json")
    if accelerator.is_main_process:
        flat = OmegaConf.to_container(cfg, resolve=True)
        hp = {"recipe": cfg.recipe, "model": cfg.model.name, "strategy": cfg.strategy.name,
              "lr": cfg.optim.lr, "epochs": cfg.optim.epochs, "seed": cfg.seed,
              "train_attacks": ",".join(flat["train_attacks"]) or "none"}
        for name, t in flat["train_attacks"].items():
            hp[f"{name}.eps"], hp[f"{name}.alpha"] = t["eps"], t["alpha"]
        metrics = {f"hparam/test_{k}": v for k, v in results["test"].items()}
        metrics["hparam/flagged"] = float(bool(results["flags"]))
        metrics.update({f"hparam/pgd_minus_{k}": v for k, v in results["autoattack"].get("gaps", {}).items()})
        tracker.hparams(hp, metrics)
        print(results_table(results), flush=True)
    tracker.close()
    accelerator.wait_for_everyone()
    return results


def _checked(cfg, accelerator, r, p, test: Dict, seconds: Dict) -> Dict:
    """The AutoAttack cross-check's part of results.json: test.aa_<norm> (added to ``test``),
    'autoattack' (what ran, on how many examples, PGD and AutoAttack there, gaps, cost),
    'flags' (messages) and 'seconds'. A disabled check is itself a flag."""
    if not cfg.autoattack.enabled:
        return {"autoattack": {"enabled": False}, "seconds": seconds,
                "flags": ["robustness not cross-checked by AutoAttack (autoattack.enabled=false)"]}
    check = crosscheck(cfg, p["config"].parent, accelerator, r.splits)
    seconds["autoattack"] = check["seconds"]
    acc = check["attacks"]
    for k, v in acc.items():
        if k.startswith("aa_"):
            test[k] = v
    gaps = check["gaps"]
    total = sum(seconds.values())
    return {"autoattack": {"enabled": True, "examples": check["examples"], "attack": check["attack"],
                           "same_examples": acc, "gaps": gaps, "tolerance": cfg.autoattack.tolerance,
                           "flagged": [f["metric"] for f in check["flags"]],
                           "warnings": check["warnings"], "seconds": check["seconds"],
                           "fraction_of_run": check["seconds"] / total if total else 0.0},
            "flags": [f["message"] for f in check["flags"]], "seconds": seconds}
