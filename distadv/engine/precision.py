"""Which precision a run computes in: ``runtime.precision=auto`` resolved for this machine, and
the one-line warning for bf16 on a CPU that has no bf16 instructions.

Why: bf16 autocast on an AVX2-only CPU (AMD EPYC, tools/bench.py, PreActResNet18 width 0.25,
batch 128, 2026-12-01) made a train step ~12x slower than fp32 (2893 ms vs 231 ms; PGD-10
evaluation 24.4 s vs 1.4 s): without bf16 instructions the kernels emulate it (our reading of
the 12x, not profiled). Where the CPU has AVX512-BF16 or AMX it ran ~2x faster than fp32. So ``auto`` picks bf16 only where the
hardware runs it natively, and fp32 (bit-exact resume on CPU) everywhere else.
"""
from __future__ import annotations

import copy
from typing import FrozenSet, Iterable, Optional

import torch

# x86 feature flags (Linux /proc/cpuinfo names) of the instructions oneDNN's bf16 kernels use.
# torch.backends.cpu.get_cpu_capability() says only "AVX512" (with or without them), and
# torch.ops.mkldnn._is_mkldnn_bf16_supported() is also true on AVX512 without BF16 (emulated).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

SLOW_BF16 = ("distadv: warning: runtime.precision=bf16 on a CPU without native bf16 (no "
             "AVX512-BF16/AMX; torch CPU capability {capability}): bf16 autocast ran ~12x slower "
             "than fp32 on an AVX2 AMD EPYC (2026-12-01, BENCHMARKS.md); use "
             "runtime.precision=fp32 or runtime.precision=auto")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """This CPU's feature flags: the first ``flags`` line of /proc/cpuinfo (Linux). Where that
    file is absent, the two flags that matter here from torch's own cpuinfo probe
    (``torch.cpu._is_avx512_bf16_supported``, ``_is_amx_tile_supported``: private, so looked
    up defensively; every shipping AMX CPU has amx_bf16 with its tiles)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    return frozenset(flag for flag, name in probes.items()
                     if getattr(torch.cpu, name, lambda: False)())


def cuda_native_bf16() -> bool:
    """Whether the current CUDA GPU has bf16 arithmetic (Ampere and later), not the emulated
    bf16 that ``torch.cuda.is_bf16_supported()`` also accepts by default."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:        # torch < 2.5 has no emulation argument and reports native only
        return torch.cuda.is_bf16_supported()


def native_bf16(device_type: str, flags: Optional[Iterable[str]] = None,
                cuda_bf16: Optional[bool] = None) -> bool:
    """Whether ``device_type`` ('cuda', 'cpu', ...) runs bf16 natively: a CUDA GPU with bf16
    arithmetic, or a CPU with AVX512-BF16 or AMX. ``flags`` (CPU feature flags) and
    ``cuda_bf16`` are the probes' answers; None asks this machine (``cpu_flags``,
    ``cuda_native_bf16``). Any other device is treated as not native (``auto`` gives fp32).

    >>> native_bf16("cpu", flags={"avx2", "fma"}), native_bf16("cpu", flags={"amx_bf16"})
    (False, True)
    """
    if device_type == "cuda":
        return bool(cuda_native_bf16() if cuda_bf16 is None else cuda_bf16)
    if device_type == "cpu":
        return bool(NATIVE_BF16_FLAGS & frozenset(cpu_flags() if flags is None else flags))
    return False


def resolve_precision(requested: str, native: bool) -> str:
    """``runtime.precision`` as the run computes: 'auto' is 'bf16' where bf16 is ``native``,
    'fp32' elsewhere; 'fp32', 'bf16' and 'fp16' are kept as given.

    >>> resolve_precision("auto", native=False), resolve_precision("auto", native=True)
    ('fp32', 'bf16')
    """
    if requested != "auto":
        return requested
    return "bf16" if native else "fp32"


def slow_bf16_warning(precision: str, device_type: str, native: bool,
                      capability: Optional[str] = None) -> Optional[str]:
    """The one-line warning for (resolved) bf16 on a CPU without native bf16, or None. Only an
    explicit ``bf16`` can get it: ``auto`` never resolves to bf16 there."""
    if precision != "bf16" or device_type != "cpu" or native:
        return None
    return SLOW_BF16.format(capability=capability or torch.backends.cpu.get_cpu_capability())


def device_type() -> str:
    """The device type the Accelerator will pick (it takes CUDA whenever there is one); known
    before it exists, because its mixed precision is fixed at construction."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_precision(requested: str) -> str:
    """``runtime.precision`` as this machine runs it: 'auto' resolved by ``native_bf16`` for
    the device the Accelerator will use."""
    return resolve_precision(requested, requested == "auto" and native_bf16(device_type()))


def with_run_precision(cfg):
    """A copy of ``cfg`` whose ``runtime.precision`` is the resolved one, so that every reader
    (the Accelerator, DeepSpeed's config, the forward's autocast, config.yaml, results.json and
    the console line) sees what the run computes in, never 'auto'."""
    cfg = copy.deepcopy(cfg)
    cfg.runtime.precision = run_precision(cfg.runtime.precision)
    return cfg
