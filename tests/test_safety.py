"""The README's bad-input table (every row names a real test), names that are paths, folders
that are not runs, missing extras, and TensorBoard on localhost only."""
from __future__ import annotations

import ast
import re
import shlex
import socket
import subprocess
import sys
import time

import psutil
import pytest

from distadv.train import main
from tests.conftest import ROOT, run_env

TOPICS = ["unknown recipe", "unknown key", "wrong type", "bad eps", "bad alpha", "bad steps",
          "bad norm", "missing data", "corrupt data", "reused run directory",
          "wrong checkpoint", "missing extra: ffcv", "missing extra: deepspeed",
          "missing extra: submitit"]


def readme_section(title: str) -> str:
    """The text of one README section (up to the next heading of any level)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n{title}\n")
    end = text.find("\n#", start + len(title) + 2)
    return text[start:end if end > 0 else None]


def test_every_bad_input_row_names_a_test_that_exists():
    rows = [r for r in readme_section("### Bad input").splitlines()
            if r.startswith("| ") and "tests/" in r]
    for topic in TOPICS:
        assert any(r.split("|")[1].strip().startswith(topic) for r in rows), topic
    for row in rows:
        refs = re.findall(r"`tests/(\w+)\.py::(\w+)`", row.split("|")[-2])
        assert refs, row
        for module, name in refs:
            tree = ast.parse((ROOT / "tests" / f"{module}.py").read_text())
            assert name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, \
                f"{module}.py::{name} (README row: {row[:60]})"


def _tree(path) -> set:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("script,args,message", [
    ("train", ["name=../escape"], "name='../escape' is not a safe run name"),
    ("train", ["name=sub/dir"], "name='sub/dir' is not a safe run name"),
    ("train", ["name={tmp}/abs"], "is not a safe run name"),
    ("train", ["recipe=../recipe/demo"], "unknown recipe '../recipe/demo'; valid recipes:"),
    ("train", ["recipe={tmp}/x"], "unknown recipe"),
    ("evaluate", ["run={tmp}/runs/none", "suite=../suite/seed"], "unknown suite"),
    ("submit", ["grid=../recipes/grid/demo", "cluster=local"], "unknown grid '../recipes/grid/demo'"),
    ("submit", ["grid=demo", "cluster=../clusters/local"], "unknown cluster profile"),
    ("submit", ["grid=demo", "cluster=local", "name=../x", "dry_run=true"], "is not a safe run name"),
])
def test_names_that_are_paths_write_nothing(tmp_path, script, args, message):
    """Each command runs with runs_root inside tmp_path/runs; nothing may appear anywhere
    under tmp_path (the parent of the runs root) or in the checkout's runs/."""
    (tmp_path / "runs").mkdir()
    before, repo_runs = _tree(tmp_path), _tree(ROOT / "runs") if (ROOT / "runs").exists() else set()
    path = {"train": "distadv/train.py", "evaluate": "distadv/evaluate.py",
            "submit": "slurm/submit.py"}[script]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if script == "train":
        args += [f"runs_root={tmp_path / 'runs'}", "optim.epochs=1"]
    r = subprocess.run([sys.executable, str(ROOT / path), *args], env=run_env(), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith("distadv: error: ") and message in r.stderr, r.stderr
    assert _tree(tmp_path) == before
    assert (_tree(ROOT / "runs") if (ROOT / "runs").exists() else set()) == repo_runs


def test_a_folder_that_is_not_a_run_is_not_used(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my data")
    assert main(["recipe=demo", f"run_dir={folder}", "optim.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "exists and is not a distadv run (no config.yaml)" in err and "choose another" in err
    assert _tree(folder) == {"notes.txt"}


def test_missing_deepspeed_is_a_clear_message(tmp_path, monkeypatch, capsys):
    """Ranks started with a DeepSpeed launch environment but without the package get our line;
    `accelerate launch` with a DeepSpeed config stops earlier, in Accelerate's own check."""
    monkeypatch.setitem(sys.modules, "deepspeed", None)      # as if not installed
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert main(["recipe=demo", f"run_dir={tmp_path / 'r'}", "optim.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "deepspeed is not installed: pip install -e '.[deepspeed]'" in err
    assert not (tmp_path / "r").exists()
    code = ("import sys, accelerate.commands.launch as l; l.is_deepspeed_available = lambda: False;"
            "sys.argv = ['accelerate-launch', '--config_file', sys.argv[1], '--num_processes',"
            " '2', sys.argv[2], 'recipe=demo']; l.main()")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "recipes/accelerate/deepspeed_zero2.yaml"),
                        str(ROOT / "distadv/train.py")], env=run_env(), capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode != 0 and "DeepSpeed is not installed => run `pip3 install deepspeed`" in r.stderr


def test_missing_submitit_is_a_clear_message(tmp_path):
    code = ("import runpy, sys; sys.modules['submitit'] = None; sys.argv = [sys.argv[1], "
            "'grid=demo', 'cluster=local']; runpy.run_path(sys.argv[0], run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "slurm/submit.py")], env=run_env(),
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("distadv: error: submitit is not installed; grids need the slurm "
                                "extra: pip install -e '.[slurm]'")
    assert not list(tmp_path.iterdir())                      # no grid directory either


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_tensorboard_command_listens_on_localhost_only(tmp_path):
    """Run the README's tensorboard command as written (plus a free port): it answers on
    127.0.0.1 and every socket it listens on is bound to a loopback address."""
    line = next(ln.strip() for ln in readme_section("## Usage").splitlines()
                if ln.strip().startswith("tensorboard "))
    cmd = shlex.split(line.split("#")[0])
    assert cmd[0] == "tensorboard" and "--bind_all" not in cmd
    port = _free_port()
    tb = ROOT / ".venv/bin/tensorboard"
    exe = [str(tb)] if tb.exists() else [sys.executable, "-m", "tensorboard.main"]
    (tmp_path / "runs").mkdir()
    proc = subprocess.Popen([*exe, *cmd[1:], "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        listening = []
        deadline = time.monotonic() + 90
        # its data server (a child) listens first, on another port: wait for the web port
        while port not in {a.port for a in listening} and time.monotonic() < deadline:
            time.sleep(0.5)
            listening = [c.laddr for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
                         for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert port in {a.port for a in listening}, f"tensorboard never listened: {listening}"
        assert all(addr.ip in ("127.0.0.1", "::1") for addr in listening), listening
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        proc.kill()
        proc.wait()
