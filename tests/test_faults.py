"""Reliability: kill -9 at random points, damaged and hostile checkpoints, a full disk, a
non-finite loss and a dead rank. Every case checks the exit status, the one-line error, and
that the last good checkpoint is untouched."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from distadv.engine.checkpoint import load_state, load_weights, save_state
from distadv.train import main
from tests.conftest import ROOT, run_env
from tools.procs import cpu_env, launch_cmd

TINY = ["recipe=demo", "optim.epochs=3", "runtime.max_steps_per_epoch=3", "log.progress=never"]


def digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(run_dir: Path, *extra: str) -> int:
    """A tiny demo run in this process (1 process)."""
    return main([*TINY, f"run_dir={run_dir}", *extra])


def launch(run_dir: Path, *extra: str, env=None, timeout=300, **popen):
    """The same run on 2 gloo processes through `accelerate launch`."""
    return subprocess.run(launch_cmd("distadv/train.py", *TINY, f"run_dir={run_dir}", *extra), env=env or cpu_env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, **popen)


def errors(text: str) -> list:
    """The distadv error lines of an output."""
    return [line for line in text.splitlines() if line.startswith("distadv: error: ")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny run (3 epochs) to compare resumed ones with."""
    run = tmp_path_factory.mktemp("ref") / "run"
    assert train(run) == 0
    return run


def same_weights(a: Path, b: Path) -> bool:
    """Equal best.safetensors and latest model weights."""
    wa, wb = load_weights(a / "checkpoints/best.safetensors"), load_weights(b / "checkpoints/best.safetensors")
    la, lb = load_state(a / "checkpoints/latest")["model"], load_state(b / "checkpoints/latest")["model"]
    return all(torch.equal(wa[k], wb[k]) for k in wa) and all(torch.equal(la[k], lb[k]) for k in la)


@pytest.mark.slow
def test_fault_injection_short(tmp_path):
    """The CI version of tools/fault_inject.py: 3 trials (killed at checkpoint rotation, in
    validation, mid-epoch), each resumed to the reference's exact weights and results."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools/fault_inject.py"), "--trials", "3",
                           "--out", str(tmp_path / "fi"), "optim.epochs=3"],
                          env=run_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "identical: 3/3; processes left running: 0" in proc.stdout
    for kind in ("checkpoint.rotated", "eval.batch", "train.step"):
        assert f"kill at {kind}" in proc.stdout


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_latest_falls_back_to_previous(tmp_path, reference, damage, capsys):
    run = tmp_path / "run"
    assert train(run, "runtime.max_epochs_per_session=2") == 0
    latest = run / "checkpoints/latest"
    assert load_state(run / "checkpoints/previous")["epoch"] == 1
    data = bytearray(latest.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 3] ^= 0x01          # one bit in the tensor data: torch alone loads it
    latest.write_bytes(bytes(data))
    capsys.readouterr()
    assert train(run) == 0
    out = capsys.readouterr().out
    assert "distadv: warning: " in out and "resuming from previous (epoch 1)" in out
    assert ("truncated" if damage == "truncate" else "sha256 mismatch") in out
    assert (run / "checkpoints/latest.corrupt").read_bytes() == bytes(data)   # kept, not rotated
    assert same_weights(run, reference)


def test_no_intact_checkpoint_is_a_clear_error_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "runtime.max_epochs_per_session=2") == 0
    for name in ("latest", "previous"):
        f = run / "checkpoints" / name
        f.write_bytes(f.read_bytes()[:-100])
    before = {p: digest(p) for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert train(run) == 2
    err = errors(capsys.readouterr().err)
    assert len(err) == 1 and "no intact checkpoint to resume from" in err[0]
    assert "latest is truncated" in err[0] and "previous is truncated" in err[0]
    assert {p: digest(p) for p in run.rglob("*") if p.is_file()} == before


class Evil:
    """Unpickling this runs ``os.system`` (it would create the marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("footer", [False, True])
def test_hostile_checkpoint_is_refused_and_runs_no_code(tmp_path, footer, capsys):
    """A `latest` whose pickle runs code: without our footer it is not even handed to torch;
    with a forged valid footer, weights_only=True refuses it. The marker never appears (and
    does appear with an unsafe torch.load, so the file really is hostile)."""
    run = tmp_path / "run"
    assert train(run, "runtime.max_epochs_per_session=1") == 0
    marker = tmp_path / "pwned"
    latest = run / "checkpoints/latest"
    state = load_state(latest)
    state["model"] = Evil(marker)
    if footer:
        save_state(latest, state)
    else:
        torch.save(state, latest)
    unsafe = subprocess.run([sys.executable, "-c", "import sys, torch; "
                             "torch.load(sys.argv[1], weights_only=False)", str(latest)],
                            env=run_env(), capture_output=True, text=True)
    assert marker.exists(), unsafe.stderr  # proof that the payload works
    marker.unlink()
    (run / "checkpoints/previous").unlink(missing_ok=True)
    capsys.readouterr()
    assert train(run) == 2
    err = errors(capsys.readouterr().err)
    assert len(err) == 1
    assert ("refused to load" in err[0] and "never runs code" in err[0]) if footer else \
        "not written by distadv" in err[0]
    assert not marker.exists()
    from distadv.evaluate import main as evaluate
    assert evaluate([f"run={run}", "suite=seed", "checkpoint=latest", "max_examples=8"]) == 2
    assert not marker.exists()
    pickled = tmp_path / "evil.safetensors"
    torch.save({"w": Evil(marker)}, pickled)
    assert evaluate([f"run={run}", "suite=seed", f"checkpoint={pickled}", "max_examples=8"]) == 2
    assert "is not a valid safetensors file" in capsys.readouterr().err
    assert not marker.exists()


def test_checkpoint_of_another_architecture_lists_the_keys(tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["recipe=demo", "model.name=resnet20", f"run_dir={other}", "optim.epochs=1",
                 "runtime.max_steps_per_epoch=1", "log.progress=never"]) == 0
    run = tmp_path / "run"
    assert train(run, "runtime.max_epochs_per_session=1") == 0
    shutil.copy(other / "checkpoints/latest", run / "checkpoints/latest")
    (run / "checkpoints/previous").unlink(missing_ok=True)
    capsys.readouterr()
    assert train(run) == 2
    err = errors(capsys.readouterr().err)
    assert len(err) == 1 and "does not fit the run's model (SmallCNN)" in err[0]
    assert "missing keys [net." in err[0] and "unexpected keys [net." in err[0]
    from distadv.evaluate import main as evaluate
    assert evaluate([f"run={run}", "suite=seed", f"checkpoint={other / 'checkpoints/best.safetensors'}"]) == 2
    err = errors(capsys.readouterr().err)
    assert len(err) == 1 and "missing keys [net." in err[0]


@pytest.fixture
def tmpfs(tmp_path):
    """A 6 MiB tmpfs (a small disk that can fill up)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_full_disk_stops_both_ranks_and_keeps_the_checkpoint(tmpfs):
    run = tmpfs / "run"
    first = launch(run, "runtime.max_epochs_per_session=1")
    assert first.returncode == 0, first.stderr[-3000:]
    latest = digest(run / "checkpoints/latest")
    with open(tmpfs / "filler", "wb") as f:       # leave 32 KiB: less than one checkpoint
        f.write(b"\0" * (shutil.disk_usage(tmpfs).free - 32 * 1024))
    proc = launch(run, "runtime.timeout_s=120")
    assert proc.returncode != 0
    err = errors(proc.stderr)
    assert any("no space left on the device writing" in e and "intact" in e for e in err), err
    assert any("rank 0 could not save epoch 2" in e for e in err), err  # rank 1 stopped too
    assert digest(run / "checkpoints/latest") == latest
    assert load_state(run / "checkpoints/latest")["epoch"] == 1
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]


@pytest.mark.slow
def test_nan_loss_stops_both_ranks_naming_epoch_and_step(tmp_path):
    """lr x 1e6 after epoch 2 (a real divergence, nothing injected): both ranks stop in epoch 3
    at the same step, latest stays at epoch 2, exit non-zero."""
    run = tmp_path / "run"
    proc = launch(run, "optim.epochs=4", "optim.milestones=[2]", "optim.gamma=1e6",
                  "optim.lr=0.05", "runtime.timeout_s=120")
    assert proc.returncode != 0
    err = errors(proc.stderr)
    assert len(err) == 2, proc.stderr[-3000:]               # one line per rank
    steps = {re.search(r"at epoch 3, step (\d+)/", e).group(1) for e in err}
    assert len(steps) == 1, err                             # the same step on both ranks
    for e in err:
        assert "the training loss is not finite" in e and "last good checkpoint is" in e
        assert f"{run / 'checkpoints/latest'} (epoch 2)" in e
    assert load_state(run / "checkpoints/latest")["epoch"] == 2
    assert not (run / "results.json").exists()


def _rank(p: psutil.Process):
    """The RANK of a training process (None for anything else)."""
    try:
        return p.environ().get("RANK") if "distadv/train.py" in " ".join(p.cmdline()) else None
    except psutil.Error:
        return None


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["accelerate", "srun-like"])
def test_a_dead_rank_ends_the_run_with_a_clear_error(tmp_path, launcher):
    """SIGKILL rank 1 once training is under way; rank 0 must stop with a clear line long
    before runtime.timeout_s=90. ``srun-like``: the 2 ranks are started directly (as SLURM
    tasks), without torchrun's agent to stop the survivor."""
    run = tmp_path / "run"
    args = [*TINY, f"run_dir={run}", "optim.epochs=50", "runtime.max_steps_per_epoch=null",
            "runtime.timeout_s=90"]
    logs = [open(tmp_path / f"log{i}", "w+") for i in range(2)]
    if launcher == "accelerate":
        procs = [subprocess.Popen(launch_cmd("distadv/train.py", *args), env=cpu_env(), cwd=ROOT,
                                  stdout=logs[0], stderr=subprocess.STDOUT)]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        procs = [subprocess.Popen([sys.executable, str(ROOT / "distadv/train.py"), *args],
                                  env=cpu_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                              MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                                  cwd=ROOT, stdout=logs[r], stderr=subprocess.STDOUT)
                 for r in range(2)]
    deadline = time.monotonic() + 240
    while not (run / "checkpoints/latest").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    rank1 = [p for p in psutil.Process().children(recursive=True) if _rank(p) == "1"]
    assert len(rank1) == 1
    rank1[0].kill()
    killed = time.monotonic()
    for p in procs:
        p.wait(timeout=120)
    elapsed = time.monotonic() - killed
    logs[0].seek(0)
    out = logs[0].read()
    assert elapsed < 60, f"the survivor took {elapsed:.0f} s"
    assert procs[0].returncode != 0
    assert "distadv: error: a collective failed: a peer process died" in out or \
        "distadv: error: rank 0 stopped by SIGTERM: another rank died" in out, out[-3000:]
    assert load_state(run / "checkpoints/latest")["epoch"] >= 1    # and it is intact
