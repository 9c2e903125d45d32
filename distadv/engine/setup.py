"""The one place that knows about distribution and precision: Accelerator + prepare.

DDP and DeepSpeed (ZeRO-1/2) come from the `accelerate launch` configuration
(recipes/accelerate/*.yaml); the recipe decides precision, memory format, compilation,
SyncBN, clipping and the process-group timeout. Traps handled here (measured on CPU, see
../shared/notes/accelerate-deepspeed-cpu.md): gloo must be named explicitly off-GPU; DeepSpeed
must not get cpu=True (it would silently run plain DDP); DeepSpeed's clipping defaults to 1.0
unless the config sets it; bf16 BatchNorm under DeepSpeed needs bf16 buffers.
"""
from __future__ import annotations

import functools
import os
import sys

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, InitProcessGroupKwargs
from torch import nn

from ..errors import ConfigError, RunDirError
from .precision import device_type, native_bf16, resolve_precision, run_precision, slow_bf16_warning
from .group import group_kwargs
from .topology import check_world
from .zero_state import load_partition, prune_partitions, save_partition

_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
SYNC_BN_NEEDS_GPUS = ("runtime.sync_bn=true needs GPUs (torch's SyncBatchNorm refuses CPU "
                      "modules); set runtime.sync_bn=false")


def check_devices(accelerator: Accelerator, cfg) -> None:
    """Refuse what this machine cannot run, at run start (not at composition: a GPU grid is
    composed on a CPU login node): ``runtime.sync_bn=true`` without GPUs."""
    if cfg.runtime.sync_bn and accelerator.device.type != "cuda":
        raise ConfigError(SYNC_BN_NEEDS_GPUS)


def make_accelerator(cfg) -> Accelerator:
    """An Accelerator for the run: precision from the recipe, gloo off-GPU, and a process-group
    timeout so that a hung peer fails after ``runtime.timeout_s`` instead of hanging."""
    pg = group_kwargs(cfg)
    # Accelerate keeps one global state per process and refuses a second precision; a new run
    # in the same process (tests, notebooks, sweeps) starts from a clean one. The process group
    # (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    native = native_bf16(device_type())    # one probe decides 'auto' and the warning
    precision = resolve_precision(cfg.runtime.precision, native)
    accelerator = Accelerator(mixed_precision=_PRECISION[precision],
                              kwargs_handlers=[InitProcessGroupKwargs(**pg)])
    check_world(accelerator)
    warning = slow_bf16_warning(precision, accelerator.device.type, native)
    if warning and accelerator.is_main_process:
        print(warning, file=sys.stderr, flush=True)
    return accelerator


def uses_deepspeed(accelerator: Accelerator) -> bool:
    """True when the launch configuration selected DeepSpeed."""
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _configure_deepspeed(accelerator: Accelerator, cfg, per_rank_batch: int) -> None:
    """Fill the DeepSpeed config from the recipe: batch sizes (we prepare no data loader),
    clipping (never the launcher's forced 1.0) and bf16 buffers for BatchNorm."""
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = per_rank_batch
    ds["train_batch_size"] = per_rank_batch * accelerator.num_processes
    ds["gradient_accumulation_steps"] = 1
    ds["gradient_clipping"] = float(cfg.optim.grad_clip)
    if run_precision(cfg.runtime.precision) == "bf16":
        ds.setdefault("data_types", {})["buffer_dtype"] = "bf16"


def channels_last(accelerator: Accelerator, cfg) -> bool:
    """Whether the run uses the channels_last layout: ``runtime.channels_last``, except under
    DeepSpeed, whose ZeRO flattening needs contiguous parameters (it fails on NHWC weights)."""
    if cfg.runtime.channels_last and uses_deepspeed(accelerator):
        if accelerator.is_main_process:
            print("distadv: DeepSpeed needs contiguous weights; using NCHW instead of channels_last")
        return False
    return bool(cfg.runtime.channels_last)


def prepare(accelerator: Accelerator, model: nn.Module, optimizer, cfg, per_rank_batch: int,
            nhwc: bool = False):
    """Apply SyncBN / channels_last / compile, then wrap for the launch (DDP or DeepSpeed).

    Returns (model, optimizer, attack_model). ``attack_model`` is the unwrapped module (the
    DeepSpeed engine's ``module``, DDP's ``module``, compiled if asked; autocast kept): attacks
    run on it so that their K forward/backward passes issue no collective at all.
    """
    rt = cfg.runtime
    if rt.sync_bn:
        check_devices(accelerator, cfg)        # fit checked already; other callers too
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if nhwc:  # decided once by ``channels_last``
        model = model.to(memory_format=torch.channels_last)
    if rt.compile:
        if rt.compile_cache_dir:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(rt.compile_cache_dir)
        # Compiled here, before prepare: with Accelerator(dynamo_backend=...) unwrap_model()
        # mutates the prepared model and no_sync silently does nothing.
        model = torch.compile(model)
    if uses_deepspeed(accelerator):
        _configure_deepspeed(accelerator, cfg, per_rank_batch)
    model, optimizer = accelerator.prepare(model, optimizer)
    attack_model = accelerator.unwrap_model(model)
    precision = run_precision(rt.precision)   # resolved already when fit calls
    if uses_deepspeed(accelerator) and precision != "fp32":
        _autocast_forward(attack_model, accelerator.device.type, precision)
    return model, optimizer, attack_model


def _autocast_forward(module: nn.Module, device_type: str, precision: str) -> None:
    """Run ``module``'s forward under autocast. DeepSpeed casts the weights to bf16/fp16 but,
    unlike Accelerate's DDP path, adds no autocast, so fp32 inputs (our pixels and
    perturbations stay fp32) would not match the weights. The engine calls this same forward."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    inner = module.forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=dtype):
            return inner(*args, **kwargs)

    module.forward = forward


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each wrapped forward, but train-mode BatchNorm then
    updates them with each rank's own batch, so ranks differ by one local update. We
    re-broadcast before every evaluation (one collective per epoch) so that all shards are
    attacked and scored with the same model; training attacks use each rank's own statistics
    (documented in the README: a difference of one momentum update).
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for b in model.buffers():
        if b.is_floating_point() or b.dtype in (torch.int64, torch.int32):
            torch.distributed.broadcast(b.data, src=0)


# --- Everything the loop and the checkpoints need to know about DeepSpeed, and no more. ---

def backward_and_step(accelerator: Accelerator, model, optimizer, loss: torch.Tensor,
                      grad_clip: float, after_backward) -> None:
    """Backward, ``after_backward()`` (AWP restores its weights there), clipping, the optimizer
    step. DeepSpeed's engine clips (``gradient_clipping`` from the recipe) and steps itself;
    Accelerate's ``backward`` would step inside backward, before the hook, so the engine is
    driven directly here, exactly as Accelerate drives it."""
    if uses_deepspeed(accelerator):
        engine = accelerator.deepspeed_engine_wrapped.engine
        engine.set_gradient_accumulation_boundary(is_boundary=True)
        engine.backward(loss)
        after_backward()
        engine.step()
        return
    accelerator.backward(loss)
    after_backward()
    if grad_clip > 0:
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def optimizer_state(accelerator: Accelerator, optimizer):
    """The optimizer's state for ``latest``; None under DeepSpeed, whose ZeRO partitions are
    per-rank files instead (``save_optimizer``)."""
    return None if uses_deepspeed(accelerator) else optimizer.state_dict()


def load_optimizer(accelerator: Accelerator, optimizer, state: dict) -> None:
    """Before ``prepare``: restore a plain optimizer from ``latest``. A run saved under
    DeepSpeed (its state is in partitions) is refused without DeepSpeed."""
    if state.get("optimizer") is not None:  # under DeepSpeed: per-rank partitions instead
        optimizer.load_state_dict(state["optimizer"])
    elif not uses_deepspeed(accelerator):
        raise RunDirError("this run was saved under DeepSpeed (its optimizer state is in "
                          "per-rank partitions); resume it with the same DeepSpeed launch "
                          "config and number of processes")


def load_partitions(accelerator: Accelerator, optimizer, ckpt_dir, epoch: int) -> None:
    """After ``prepare``: under DeepSpeed, this rank's ZeRO partition of ``epoch``."""
    if uses_deepspeed(accelerator):
        load_partition(optimizer, ckpt_dir, epoch, accelerator.process_index,
                       accelerator.num_processes)


def save_partitions(accelerator: Accelerator, optimizer, ckpt_dir, epoch: int) -> None:
    """Under DeepSpeed, every rank writes its optimizer partition of ``epoch``, and all wait,
    before ``latest`` points at it."""
    if uses_deepspeed(accelerator):
        save_partition(optimizer, ckpt_dir, epoch, accelerator.process_index)
        accelerator.wait_for_everyone()


def prune_saved_partitions(accelerator: Accelerator, ckpt_dir, epoch: int) -> None:
    """Rank 0, once ``latest`` is at ``epoch``: drop the partitions nothing points at."""
    if uses_deepspeed(accelerator):
        prune_partitions(ckpt_dir, epoch)


def describe(accelerator: Accelerator, model, precision: str) -> dict:
    """What results.json reports about the launch."""
    return {"type": str(accelerator.distributed_type.value), "engine": type(model).__name__,
            "world_size": accelerator.num_processes, "precision": precision,
            "zero_stage": accelerator.state.deepspeed_plugin.zero_stage
            if uses_deepspeed(accelerator) else None}


def peak_rss_per_rank(accelerator: Accelerator) -> list:
    """Every rank's ``peak_rss_mib()``, in rank order (a collective: every rank calls it)."""
    peak = torch.tensor([peak_rss_mib()], dtype=torch.float64, device=accelerator.device)
    return [round(v, 1) for v in accelerator.gather(peak).tolist()]


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM of /proc/self/status: heap and mapped file
    pages alike), in MiB; getrusage's ru_maxrss where /proc is absent."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def master_partitions(accelerator: Accelerator, optimizer):
    """This rank's fp32 master weights where they are not the module's own parameters: under
    DeepSpeed ZeRO-1/2 with bf16/fp16 weights, the flat fp32 partitions (one per parameter
    group) that the optimizer updates in place. None otherwise (plain, DDP, DeepSpeed fp32:
    the module's fp32 parameters are the masters)."""
    if not uses_deepspeed(accelerator):
        return None
    zero = getattr(optimizer, "optimizer", optimizer)
    if all(p.dtype == torch.float32 for group in zero.bit16_groups for p in group):
        return None
    return list(zero.single_partition_of_fp32_groups)


def _zero_layout(optimizer):
    """(ZeRO optimizer, per group: [(param, offset, numel, shape)]) of the flat buffers."""
    zero = getattr(optimizer, "optimizer", optimizer)
    groups = [[(p, off, m.numel(), m.shape) for p, m, off in
               zip(zero.round_robin_bit16_groups[i], zero.round_robin_bit16_meta[i],
                   zero.round_robin_bit16_offsets[i])]
              for i in range(len(zero.bit16_groups_flat))]
    return zero, groups


def gather_partitions(optimizer, parts) -> dict:
    """Every rank: assemble flat fp32 partitions laid out like the ZeRO masters (``parts``,
    one per group) into whole tensors, keyed by the ``id`` of the module parameter each belongs
    to. Cost: one all-gather of the model's fp32 size (EMA: once per epoch, not per step)."""
    zero, groups = _zero_layout(optimizer)
    world = torch.distributed.get_world_size()
    out = {}
    for i, part in enumerate(parts):
        chunks = [torch.empty_like(part) for _ in range(world)]
        torch.distributed.all_gather(chunks, part.contiguous())
        full = torch.cat(chunks)
        for p, off, n, shape in groups[i]:
            out[id(p)] = full.narrow(0, off, n).view(shape)
    return out


def split_into_partitions(optimizer, values: dict) -> list:
    """The inverse of ``gather_partitions`` for this rank: whole fp32 tensors (keyed by the
    parameter's ``id``) cut into this rank's flat partition of each group. No communication."""
    zero, groups = _zero_layout(optimizer)
    rank = torch.distributed.get_rank()
    parts = []
    for i, flat in enumerate(zero.bit16_groups_flat):
        full = torch.zeros(flat.numel(), dtype=torch.float32, device=flat.device)
        for p, off, n, _ in groups[i]:
            full.narrow(0, off, n).copy_(values[id(p)].reshape(-1))
        parts.append(zero.get_data_parallel_partitions(full, i)[rank].clone())
    return parts
