"""fit(cfg): data -> model -> strategy -> prepare -> epochs (train, validate, early stop,
checkpoint, log) -> test of the best checkpoint -> results.json."""
from __future__ import annotations

import json
import sys
from typing import Dict

import torch
from omegaconf import OmegaConf

from ..attacks import build_attack
from ..data import build_splits
from ..models import create_model
from ..strategies import build_strategy
from . import checkpoint as ck
from .early_stop import EarlyStopper
from .evaluate import evaluate
from .loaders import make_loaders
from .loop import train_epoch
from .optim import build_optimizer, build_scheduler
from .report import results_table
from .rundir import inspect, paths, run_dir_of
from .loaders import per_rank
from .setup import broadcast_buffers, make_accelerator, prepare, uses_deepspeed
from .tracking import Tracker


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The RNG seed of one rank's epoch. Reseeding at every epoch start makes a resumed run
    draw exactly the random starts, crops and MAT choices of an uninterrupted one, without
    carrying RNG state across world sizes."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)


def fit(cfg) -> Dict:
    """Train, validate, early-stop and test one run; returns the results dict."""
    accelerator = make_accelerator(cfg)
    main = accelerator.is_main_process
    status, run_dir = inspect(run_dir_of(cfg), cfg)   # read-only on every rank: refuses early
    p = paths(run_dir)
    if status == "finished":
        results = json.loads(p["results"].read_text())
        if main:
            print(f"{run_dir} is already finished; results:\n{results_table(results)}")
        return results

    splits = build_splits(cfg.data)                    # data errors also come before any write
    info = splits.info
    if main:
        p["checkpoints"].mkdir(parents=True, exist_ok=True)
        if not p["config"].is_file():
            ck.atomic_write(p["config"], lambda f: OmegaConf.save(cfg, f))
    accelerator.wait_for_everyone()

    torch.manual_seed(cfg.seed)                        # same initial weights on every rank
    kw = {"width": cfg.model.width} if cfg.model.width is not None else {}
    model = create_model(cfg.model.name, info.num_classes, info.in_channels, info.mean, info.std,
                         cfg.model.input_noise, info.image_size, **kw)
    world, rank = accelerator.num_processes, accelerator.process_index
    train_dl, val_dl, test_dl = make_loaders(splits, cfg.data, world, rank, cfg.seed)
    steps = len(train_dl) if cfg.runtime.max_steps_per_epoch is None else min(
        len(train_dl), cfg.runtime.max_steps_per_epoch)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, steps)
    stopper = EarlyStopper(cfg.early_stop.patience, cfg.early_stop.min_delta)
    start_epoch, history = 0, []
    if status == "resume":
        state = ck.load_state(p["latest"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["early_stop"])
        start_epoch, history = state["epoch"], list(state["history"])
    raw_model = model  # parameters shared with the prepared/compiled model; plain state-dict keys
    model, optimizer, attack_model = prepare(accelerator, model, optimizer, cfg,
                                             per_rank(cfg.data.batch_size, world, "data.batch_size"))
    fmt = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
    if status == "resume" and accelerator.scaler is not None and state.get("scaler"):
        accelerator.scaler.load_state_dict(state["scaler"])
    val_attacks = {k: build_attack(t) for k, t in cfg.eval_attacks.items()}
    tracker = Tracker(p["tb"], main and cfg.log.tensorboard, purge_step=start_epoch or None)
    progress = main and (cfg.log.progress == "always" or
                         (cfg.log.progress == "auto" and sys.stderr.isatty()))
    if main:
        print(f"distadv: {cfg.recipe} -> {run_dir} ({status}, epoch {start_epoch}/"
              f"{cfg.optim.epochs}, {world} process(es), {accelerator.device}, "
              f"{cfg.runtime.precision})", flush=True)

    epochs_this_session = 0
    for epoch in range(start_epoch, cfg.optim.epochs):
        # Every rank computes the same decision from gathered metrics; the trigger (one
        # all-reduce per epoch) makes "all ranks stop together" hold even if they disagreed.
        if stopper.should_stop:
            accelerator.set_trigger()
        if accelerator.check_trigger():
            break
        if cfg.runtime.max_epochs_per_session and epochs_this_session >= cfg.runtime.max_epochs_per_session:
            break
        torch.manual_seed(epoch_seed(cfg.seed, epoch, rank))
        strategy = build_strategy(cfg, info.num_classes, epoch)
        train_dl.sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        tr = train_epoch(model, attack_model, strategy, optimizer, scheduler, train_dl,
                         accelerator, cfg.data.augment, cfg.optim.grad_clip, steps, progress,
                         f"epoch {epoch + 1}/{cfg.optim.epochs}", fmt)
        broadcast_buffers(attack_model)                # every shard scored with rank 0's BN stats
        val, images = evaluate(attack_model, val_dl, val_attacks, accelerator, info.num_classes,
                               cfg.runtime.max_steps_per_epoch, cfg.log.image_grid if main else 0,
                               cfg.early_stop.metric if cfg.early_stop.metric in val_attacks else None)
        improved = stopper.update(val[cfg.early_stop.metric], epoch + 1)
        record = {"epoch": epoch + 1, "lr": lr, **{f"train/{k}": v for k, v in tr.items()},
                  **{f"val/{k}": v for k, v in val.items()}}
        history.append(record)
        if main:
            _save_epoch(p, accelerator, raw_model, optimizer, scheduler, stopper, history,
                        improved, cfg.early_stop.metric)
            tracker.scalars(epoch + 1, {k: v for k, v in record.items() if k != "epoch"})
            tracker.adversarial_grid(epoch + 1, images)
            print(_epoch_line(record) + (" *" if improved else ""), flush=True)
        accelerator.wait_for_everyone()                # checkpoint on disk before anyone goes on
        epochs_this_session += 1
    finished = stopper.should_stop or (history and history[-1]["epoch"] >= cfg.optim.epochs)
    if not finished:
        tracker.close()
        if main:
            print(f"distadv: stopped after epoch {history[-1]['epoch'] if history else 0}; "
                  f"rerun the same command to resume from {p['latest']}")
        return {"finished": False}
    dist = {"type": str(accelerator.distributed_type.value), "engine": type(model).__name__,
            "world_size": world, "precision": cfg.runtime.precision,
            "zero_stage": accelerator.state.deepspeed_plugin.zero_stage
            if uses_deepspeed(accelerator) else None}
    return _final_test(cfg, accelerator, raw_model, attack_model, test_dl, val_attacks, info,
                       stopper, history, tracker, p, dist)


def _save_epoch(p, accelerator, raw_model, optimizer, scheduler, stopper, history, improved,
                metric) -> None:
    """Rank 0: best weights (if improved), then the full state, each written atomically."""
    weights = raw_model.state_dict()
    epoch = history[-1]["epoch"]
    if improved:
        ck.save_weights(p["best"], weights, {"epoch": str(epoch), "metric": metric,
                                             "value": str(history[-1][f"val/{metric}"])})
    ck.save_state(p["latest"], {
        "model": weights, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": accelerator.scaler.state_dict() if accelerator.scaler else None,
        "epoch": epoch, "early_stop": stopper.state_dict(), "history": history})


def _epoch_line(r: Dict) -> str:
    """One console line per epoch."""
    val = " ".join(f"{k[4:]} {v:.3f}" for k, v in r.items() if k.startswith("val/") and k != "val/count")
    return (f"epoch {r['epoch']:3d} | lr {r['lr']:.4g} | train loss {r['train/loss']:.4f} acc "
            f"{r['train/acc']:.3f} | val {val} | {r['train/images_per_s']:.0f} img/s")


def _final_test(cfg, accelerator, raw_model, model, test_dl, attacks, info, stopper, history,
                tracker, p, dist) -> Dict:
    """Evaluate the best checkpoint once on the test split and write results.json."""
    raw_model.load_state_dict(ck.load_weights(p["best"]))  # same tensors as ``model``'s
    torch.manual_seed(epoch_seed(cfg.seed, 10**6, accelerator.process_index))
    test, _ = evaluate(model, test_dl, attacks, accelerator, info.num_classes)
    best = next(h for h in history if h["epoch"] == stopper.best_epoch)
    results = {
        "recipe": cfg.recipe, "best_epoch": stopper.best_epoch, "epochs_run": history[-1]["epoch"],
        "stopped_early": bool(stopper.should_stop and history[-1]["epoch"] < cfg.optim.epochs),
        "early_stop_metric": cfg.early_stop.metric, "world_size": dist["world_size"],
        "distributed": dist,
        "test": {k: v for k, v in test.items() if k != "count"}, "test_examples": test["count"],
        "val_best": {k[4:]: v for k, v in best.items() if k.startswith("val/") and k != "val/count"},
        "val_examples": best["val/count"],
    }
    if accelerator.is_main_process:
        ck.write_json(p["results"], results)
        flat = OmegaConf.to_container(cfg, resolve=True)
        hp = {"recipe": cfg.recipe, "model": cfg.model.name, "strategy": cfg.strategy.name,
              "lr": cfg.optim.lr, "epochs": cfg.optim.epochs, "seed": cfg.seed,
              "train_attacks": ",".join(flat["train_attacks"]) or "none"}
        for name, t in flat["train_attacks"].items():
            hp[f"{name}.eps"] = t["eps"]
        tracker.hparams(hp, {f"hparam/test_{k}": v for k, v in results["test"].items()})
        print(results_table(results), flush=True)
    tracker.close()
    accelerator.wait_for_everyone()
    return results
