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
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, InitProcessGroupKwargs
from torch import nn

from ..errors import ConfigError

_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def make_accelerator(cfg) -> Accelerator:
    """An Accelerator for the run: precision from the recipe, gloo off-GPU, and a process-group
    timeout so that a hung peer fails after ``runtime.timeout_s`` instead of hanging."""
    pg = {"timeout": timedelta(seconds=cfg.runtime.timeout_s)}
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if deepspeed:
        try:
            import deepspeed as _  # noqa: F401  (Accelerate would fail later, less clearly)
        except ImportError:
            raise ConfigError("this launch uses DeepSpeed (recipes/accelerate/deepspeed_*.yaml) "
                              "but deepspeed is not installed: pip install -e '.[deepspeed]', "
                              "or launch with recipes/accelerate/ddp.yaml") from None
    if deepspeed and not torch.cuda.is_available():
        # DeepSpeed off-GPU needs gloo named; only then, because a non-default backend makes
        # Accelerate initialise a process group even for a single process.
        pg["backend"] = "gloo"
    # Accelerate keeps one global state per process and refuses a second precision; a new run
    # in the same process (tests, notebooks, sweeps) starts from a clean one. The process group
    # (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=_PRECISION[cfg.runtime.precision],
                       kwargs_handlers=[InitProcessGroupKwargs(**pg)])


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
    if cfg.runtime.precision == "bf16":
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
        if accelerator.device.type != "cuda":
            raise ConfigError("runtime.sync_bn=true needs GPUs (torch's SyncBatchNorm refuses CPU "
                              "modules); set runtime.sync_bn=false")
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
    if uses_deepspeed(accelerator) and rt.precision != "fp32":
        _autocast_forward(attack_model, accelerator.device.type, rt.precision)
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
