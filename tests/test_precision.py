"""runtime.precision=auto (bf16 only where the hardware has it), the warning for bf16 on a CPU
without native bf16, and what a run reports (issue 16)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from distadv.compose import load_config
from distadv.engine import setup
from distadv.engine.fit import fit
from distadv.engine.precision import (cpu_flags, native_bf16, resolve_precision, run_precision,
                                      slow_bf16_warning)
from tests.conftest import NO_CHECK

# Abridged /proc/cpuinfo flags of three CPU generations.
AVX2_EPYC = "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi1 bmi2 sha_ni clzero"   # Zen 2
AVX512_SKYLAKE = "sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl"   # no BF16
SAPPHIRE_RAPIDS = AVX512_SKYLAKE + " avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
ZEN4 = AVX512_SKYLAKE + " avx512_vnni avx512_bf16"
QUIET = ["log.progress=never", *NO_CHECK]


@pytest.mark.parametrize("flags,expected", [(AVX2_EPYC, "fp32"), (AVX512_SKYLAKE, "fp32"),
                                            (SAPPHIRE_RAPIDS, "bf16"), (ZEN4, "bf16")])
def test_auto_is_bf16_only_on_cpus_with_native_bf16(flags, expected):
    """AVX512 alone (what get_cpu_capability() reports) is not enough: the BF16/AMX flags are."""
    assert resolve_precision("auto", native_bf16("cpu", flags=flags.split())) == expected


def test_auto_on_gpus_and_other_devices_and_explicit_values_kept():
    assert resolve_precision("auto", native_bf16("cuda", cuda_bf16=True)) == "bf16"
    assert resolve_precision("auto", native_bf16("cuda", cuda_bf16=False)) == "fp32"
    assert resolve_precision("auto", native_bf16("mps", flags=SAPPHIRE_RAPIDS.split())) == "fp32"
    for explicit in ("fp32", "bf16", "fp16"):
        assert resolve_precision(explicit, native=False) == explicit
        assert resolve_precision(explicit, native=True) == explicit


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {AVX2_EPYC}\n\n"
                    f"processor\t: 1\nflags\t\t: {AVX2_EPYC}\n")
    assert cpu_flags(str(info)) == frozenset(AVX2_EPYC.split())


@pytest.mark.skipif(not hasattr(torch.cpu, "_is_avx512_bf16_supported")
                    or not Path("/proc/cpuinfo").is_file()
                    or "flags" not in Path("/proc/cpuinfo").read_text(),
                    reason="needs Linux x86 /proc/cpuinfo and torch's own CPU probe")
def test_this_machines_probe_agrees_with_torchs_cpuinfo():
    """Two independent probes of this CPU (the kernel's flags, torch's cpuinfo library) give
    the same answer, and ``auto`` follows it (on the AVX2 EPYC of 2026-12-01: fp32)."""
    torch_says = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native_bf16("cpu") == torch_says
    if not torch.cuda.is_available():
        assert run_precision("auto") == ("bf16" if torch_says else "fp32")


def test_the_warning_names_the_cost_and_the_fix():
    line = slow_bf16_warning("bf16", "cpu", native=False, capability="AVX2")
    assert "\n" not in line and line.startswith("distadv: warning: runtime.precision=bf16")
    assert "~12x slower than fp32 on an AVX2 AMD EPYC (2026-12-01" in line
    assert "runtime.precision=fp32 or runtime.precision=auto" in line and "AVX2" in line
    assert slow_bf16_warning("fp32", "cpu", native=False) is None
    assert slow_bf16_warning("fp16", "cpu", native=False) is None
    assert slow_bf16_warning("bf16", "cpu", native=True) is None
    assert slow_bf16_warning("bf16", "cuda", native=False) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="the warning is about CPUs")
@pytest.mark.parametrize("native", [False, True, None])
def test_explicit_bf16_warns_once_on_stderr_where_the_cpu_emulates_it(monkeypatch, capsys, native):
    """The Accelerator's construction warns (rank 0, stderr) for bf16 and never for fp32.
    ``native`` False / True: the probe's answer for an AVX2 / an AMX CPU; None: this CPU's."""
    if native is not None:
        monkeypatch.setattr(setup, "native_bf16", lambda device_type: native)
    expect = not (native if native is not None else native_bf16("cpu"))
    setup.make_accelerator(load_config(["recipe=demo", "runtime.precision=fp32"]))
    assert capsys.readouterr().err == ""
    setup.make_accelerator(load_config(["recipe=demo", "runtime.precision=bf16"]))
    err = capsys.readouterr().err.splitlines()
    assert err == ([slow_bf16_warning("bf16", "cpu", native=False)] if expect else [])
    setup.make_accelerator(load_config(["recipe=demo", "runtime.precision=auto"]))
    assert capsys.readouterr().err == ""           # auto never picks emulated bf16


def test_a_run_with_auto_records_and_uses_the_resolved_precision(tmp_path, capsys):
    """What ``auto`` picked is in results.json, config.yaml and the console line, and it is
    what the Accelerator computes in; 'auto' itself is nowhere."""
    from accelerate.state import AcceleratorState
    picked = run_precision("auto")
    assert picked in ("fp32", "bf16")
    run = tmp_path / "r"
    cfg = load_config(["recipe=demo", f"run_dir={run}", "runtime.precision=auto", "optim.epochs=1",
                       "runtime.max_steps_per_epoch=1", "data.test_size=16", *QUIET])
    results = fit(cfg)
    assert results["distributed"]["precision"] == picked
    assert AcceleratorState().mixed_precision == {"fp32": "no", "bf16": "bf16"}[picked]
    assert OmegaConf.load(run / "config.yaml").runtime.precision == picked
    assert f", {picked} (runtime.precision=auto))" in capsys.readouterr().out
    assert cfg.runtime.precision == "auto"            # the caller's config is not changed
