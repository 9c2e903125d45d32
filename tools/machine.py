"""The machine a benchmark figure was measured on, for every benchmark's output.

bf16 figures depend on the CPU more than on anything distadv does: on an AVX2-only AMD EPYC
bf16 autocast ran ~12x slower than fp32, on AMX / AVX512-BF16 CPUs ~2x faster (BENCHMARKS.md).
So each tool prints this next to its numbers (JSON: the ``machine`` entry).
"""
from __future__ import annotations

import platform
from typing import Optional

import torch

from distadv.engine.precision import NATIVE_BF16_FLAGS, cpu_flags, native_bf16


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """CPU model, torch's CPU capability, whether bf16 is native (and by which flags), threads."""
    return {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": native_bf16("cpu"),
            "bf16_flags": sorted(NATIVE_BF16_FLAGS & cpu_flags()),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def machine_line(m: Optional[dict] = None) -> str:
    """``machine()`` as one line, e.g. 'AMD EPYC, CPU capability AVX2, no native bf16, 1 thread(s)'."""
    m = m or machine()
    bf16 = (f"native bf16 ({', '.join(m['bf16_flags'])})" if m["native_bf16"]
            else "no native bf16 (bf16 autocast emulated: slow)")
    return f"{m['cpu']}, CPU capability {m['cpu_capability']}, {bf16}, {m['threads']} thread(s)"
