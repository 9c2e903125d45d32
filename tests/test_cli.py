"""Hydra's command-line conventions on every entry: --help (recipes, groups, every key of the
schema with its comment), --cfg job [--resolve] (the composed config, nothing written), -m
sweeps (here, and as one job array on the local SLURM), the console scripts, and
``accelerate launch -m distadv.train``."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import NO_CHECK, ROOT, run_env

from distadv.cli.schema_doc import PACKAGE, Key, run_keys, walk
from distadv.compose import load_config, recipe_names

PY = sys.executable
BIN = Path(PY).parent
TINY = ["runtime.max_steps_per_epoch=2", "data.test_size=64", "log.progress=never", *NO_CHECK]


def cli(*args, script="distadv/train.py", cwd=None, env=None, timeout=300):
    """Run an entry script as a user would; returns the CompletedProcess."""
    return subprocess.run([PY, str(ROOT / script), *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env or run_env(), timeout=timeout)


def schema_keys(cls, prefix="") -> set:
    """Every leaf key of an imported dataclass schema (Dict[str, X] sections as NAME)."""
    hints = typing.get_type_hints(cls)
    out = set()
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out |= schema_keys(t, f"{prefix}{f.name}.")
        elif typing.get_origin(t) is dict and dataclasses.is_dataclass(typing.get_args(t)[1]):
            out |= schema_keys(typing.get_args(t)[1], f"{prefix}{f.name}.NAME.")
        else:
            out.add(prefix + f.name)
    return out


@pytest.mark.parametrize("schema", ["run", "eval", "cluster"])
def test_help_keys_are_the_schema_and_all_documented(schema):
    """The keys --help reads from the sources are exactly the imported schema's, each with a
    meaning: the help and the schema cannot drift apart."""
    from distadv.config import RunConfig
    from distadv.eval.config import EvalConfig
    from distadv.grid.cluster import ClusterProfile

    cls, items = {"run": (RunConfig, run_keys()),
                  "eval": (EvalConfig, list(walk(PACKAGE / "eval/config.py", "EvalConfig"))),
                  "cluster": (ClusterProfile,
                              list(walk(PACKAGE / "grid/cluster.py", "ClusterProfile")))}[schema]
    keys = [k for k in items if isinstance(k, Key)]
    assert {k.key for k in keys} == schema_keys(cls)
    assert [k.key for k in keys if not k.doc] == []


def test_train_help_names_every_recipe_and_top_level_key_fast():
    start = time.perf_counter()
    r = cli("--help")
    seconds = time.perf_counter() - start
    assert r.returncode == 0 and r.stderr == ""
    for name in recipe_names():
        assert f"\n  {name} " in r.stdout, name
    from distadv.config import RunConfig
    for f in dataclasses.fields(RunConfig):
        assert f"    {f.name}" in r.stdout, f.name
    assert "data.batch_size: int = 64" in r.stdout and "GLOBAL training batch" in r.stdout
    assert "ema.decay: float = 0.995" in r.stdout                 # an add-on's section
    probe = subprocess.run([PY, "-X", "importtime", str(ROOT / "distadv/train.py"), "-h"],
                           capture_output=True, text=True, env=run_env())
    assert "torch" not in {ln.split("|")[-1].strip() for ln in probe.stderr.splitlines()}
    assert "hydra" not in {ln.split("|")[-1].strip() for ln in probe.stderr.splitlines()}
    print(f"train.py --help: {seconds:.2f} s wall")


@pytest.mark.parametrize("script,needle", [
    ("distadv/evaluate.py", "suite.aa_version: str = auto"),
    ("slurm/submit.py", "cluster.KEY=V"), ("slurm/status.py", "--json"),
    ("tools/report.py", "GRID_DIR/report"), ("tools/forensics.py", "report.json")])
def test_every_entry_has_help(script, needle):
    r = cli("--help", script=script)
    assert r.returncode == 0 and needle in r.stdout, r.stdout + r.stderr
    if script == "distadv/evaluate.py":
        assert all(f"\n  {s} " in r.stdout for s in ("seed", "autoattack", "eot", "full"))
    if script == "slurm/submit.py":
        assert "\n  table1 " in r.stdout and "\n  local" in r.stdout and "time_min" in r.stdout


def _recipes_copy(tmp_path: Path) -> Path:
    root = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes", root)
    return root


@pytest.mark.parametrize("recipe", ["demo", "fmnist_trades_awp_ema", "wider_wrn"])
def test_cfg_job_prints_yaml_that_composes_back_and_writes_nothing(tmp_path, recipe):
    work = tmp_path / "cwd"
    work.mkdir()
    args = [f"recipe={recipe}", "optim.lr=0.2", "eval_attacks.pgd_linf.steps=3"]
    r = cli(*args, "--cfg", "job", cwd=work)
    assert r.returncode == 0, r.stderr
    assert list(work.iterdir()) == []                         # no runs/, nothing
    printed = OmegaConf.create(r.stdout)
    # The printed YAML, as a recipe of its own, composes to the same config.
    root = _recipes_copy(tmp_path)
    (root / "recipe" / "dumped.yaml").write_text("# @package _global_\n" + r.stdout)
    os.environ["DISTADV_RECIPES"] = str(root)
    try:
        again = load_config(["recipe=dumped"])
    finally:
        del os.environ["DISTADV_RECIPES"]
    original = load_config(args)
    assert OmegaConf.to_container(printed) == OmegaConf.to_container(original)
    assert {**OmegaConf.to_container(again), "recipe": recipe} == OmegaConf.to_container(original)
    assert printed.optim.lr == 0.2 and printed.eval_attacks.pgd_linf.steps == 3


def test_cfg_resolve_resolves_interpolations(tmp_path):
    root = _recipes_copy(tmp_path)
    (root / "recipe" / "interp.yaml").write_text(
        "# @package _global_\n# Interpolation test.\ndefaults:\n  - demo\n  - _self_\n"
        "eval_attacks:\n  pgd_linf:\n    eps: ${train_attacks.linf.eps}\n")
    env = {**run_env(), "DISTADV_RECIPES": str(root)}
    raw = cli("recipe=interp", "--cfg", "job", env=env)
    resolved = cli("recipe=interp", "--cfg", "job", "--resolve", env=env)
    assert raw.returncode == 0 and resolved.returncode == 0, raw.stderr + resolved.stderr
    assert "eps: ${train_attacks.linf.eps}" in raw.stdout
    eps = OmegaConf.create(resolved.stdout).train_attacks.linf.eps
    assert OmegaConf.create(resolved.stdout).eval_attacks.pgd_linf.eps == eps


@pytest.mark.parametrize("args,message", [
    (["--cfg", "hydra"], "--cfg takes 'job'"),
    (["--frobnicate"], "unknown option '--frobnicate'"),
    (["--resolve"], "--resolve only applies to --cfg job"),
    (["optim.lrr=0.1", "--cfg", "job"], "unknown key 'optim.lrr'"),
    (["-m", "optim.lr=0.1"], "-m found nothing to sweep"),
    (["-m", "seed=0,1", "run_dir=x"], "drop run_dir="),
    (["-m", "seed=0,1", "cluster.time_min=5"], "add cluster=PROFILE"),
    (["-m", "seed=0,1", "optim.lrr=0.1,0.2"], "unknown key 'optim.lrr'"),
    (["-m", "seed=0,1", "cluster=nowhere"], "unknown cluster profile 'nowhere'"),
])
def test_bad_command_lines_are_one_line_and_exit_2(tmp_path, args, message):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []                    # nothing written


@pytest.mark.slow
def test_sweep_2x2_makes_4_runs_named_from_their_overrides(tmp_path):
    """``-m seed=0,1 optim.lr=...``: 4 runs one after another, each in its own directory named
    from its overrides, each config holding them; running it again trains nothing."""
    from distadv.train import main

    args = ["-m", "recipe=demo", "seed=0,1", "optim.lr=0.05,0.1", "optim.epochs=1",
            f"runs_root={tmp_path}", *TINY]
    assert main(args) == 0
    (sweep,) = (tmp_path / "sweeps").iterdir()
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in runs] == ["00-demo-lr0.05-s0", "01-demo-lr0.05-s1",
                                      "02-demo-lr0.1-s0", "03-demo-lr0.1-s1"]
    seen = set()
    for run in runs:
        cfg = OmegaConf.load(run / "config.yaml")
        assert (run / "results.json").is_file() and cfg.recipe == "demo"
        assert f"lr{cfg.optim.lr}-s{cfg.seed}" in run.name and cfg.optim.epochs == 1
        seen.add((cfg.optim.lr, cfg.seed))
    assert seen == {(0.05, 0), (0.05, 1), (0.1, 0), (0.1, 1)}
    mtimes = {r: (r / "results.json").stat().st_mtime_ns for r in runs}
    assert main(args) == 0                                   # a second time: all skipped
    assert {r: (r / "results.json").stat().st_mtime_ns for r in runs} == mtimes
    st = cli(str(sweep), "--json", script="slurm/status.py")
    rows = json.loads(st.stdout)
    assert [r["state"] for r in rows] == ["LOCAL"] * 4 and all(r["finished"] for r in rows)


@pytest.mark.slow
def test_sweep_with_cluster_is_one_job_array_on_local_slurm(slurm, tmp_path):
    """The same 2 x 2 sweep with cluster=local: ONE array of 4 elements on the local SLURM
    through the grid machinery (grid.json, submissions.jsonl, each element's overrides). The
    array is cancelled once SLURM lists it: that its elements train and resume is
    tests/test_slurm.py's (the same submit_plan and TrainElement)."""
    from test_slurm import env_with, last_jobs

    gd = tmp_path / "sweep"
    r = cli("-m", "recipe=demo", "seed=0,1", "optim.lr=0.05,0.1", "optim.epochs=1", *TINY,
            "cluster=local", f"grid_dir={gd}", env=env_with(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = last_jobs(gd)
    arrays = {j.split("_")[0] for j in jobs.values()}
    try:
        assert len(jobs) == 4 and len(arrays) == 1 and "as job array" in r.stdout
        listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", next(iter(arrays))],
                                capture_output=True, text=True).stdout.split()
        done = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID", "-j", next(iter(arrays))],
                              capture_output=True, text=True).stdout.split()
        assert set(jobs.values()) <= set(listed) | set(done)        # SLURM has all four
    finally:
        subprocess.run(["scancel", *arrays])
    manifest = json.loads((gd / "grid.json").read_text())
    assert [e["name"] for e in manifest["elements"]] == sorted(jobs)
    pairs = {(e["seed"], next(o for o in e["overrides"] if o.startswith("optim.lr=")))
             for e in manifest["elements"]}
    assert pairs == {(s, f"optim.lr={lr}") for s in (0, 1) for lr in ("0.05", "0.1")}
    assert all("optim.epochs=1" in e["overrides"] for e in manifest["elements"])


def test_console_scripts_are_installed_and_work(tmp_path):
    """``pip install -e .`` puts the five entries on PATH; distadv-train --cfg job composes."""
    for name in ("distadv-train", "distadv-evaluate", "distadv-submit", "distadv-status",
                 "distadv-report"):
        exe = BIN / name
        assert exe.is_file(), f"{exe} missing: pip install -e ."
        r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path,
                           env=run_env())
        assert r.returncode == 0 and "usage" in r.stdout.lower(), name + r.stderr
    r = subprocess.run([str(BIN / "distadv-train"), "recipe=fmnist_linf", "--cfg", "job"],
                       capture_output=True, text=True, cwd=tmp_path, env=run_env())
    assert r.returncode == 0, r.stderr
    assert OmegaConf.create(r.stdout).data.name == "fashion_mnist"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_accelerate_launch_module_runs_a_two_rank_sweep(tmp_path):
    """``accelerate launch -m distadv.train -m seed=0,1 ...``: the module entry under the
    launcher (run as ``python -m`` runs it, with the grid's readers logged), 2 gloo ranks, each
    element of the sweep trained at world size 2. Only rank 0 reads the grid's records: rank 1
    reading them while rank 0 wrote grid.json failed CI ("exists and is not a grid directory").
    A sweep refused on rank 0 (a second copy holds the grid's lock) stops every rank with the
    same line and exit 2, not one rank's error and a SIGTERM for the other."""
    def launch(*extra):
        cmd = [PY, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "recipes/accelerate/ddp.yaml"), "--num_processes", "2",
               "--log_dir", os.devnull, str(ROOT / "tests/scripts/grid_readers.py"), "-m",
               "recipe=demo", "seed=0,1", "optim.epochs=1", f"runs_root={tmp_path}", *TINY,
               *extra]
        env = {**run_env(), "ACCELERATE_USE_CPU": "1", "GRID_READERS_LOG": str(log)}
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=600)

    log = tmp_path / "readers.log"
    r = launch()
    assert r.returncode == 0, r.stderr[-3000:]
    (sweep,) = (tmp_path / "sweeps").iterdir()
    results = [json.loads((sweep / n / "results.json").read_text())
               for n in ("00-demo-s0", "01-demo-s1")]
    assert [res["world_size"] for res in results] == [2, 2]
    assert r.stdout.count("distadv: sweep run ") == 2          # rank 0 speaks, once per run
    readers = log.read_text().split()
    assert readers[0::2] and set(readers[0::2]) == {"0"}, readers
    assert {"read_manifest", "attempts"} <= set(readers[1::2])

    import fcntl
    with open(sweep / ".submit.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = launch()                      # the same sweep, a second copy
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("distadv: error:")]
    assert r.returncode != 0 and len(lines) == 2, r.stderr[-3000:]
    assert all("another submission of this grid is running" in ln for ln in lines), lines
    assert "SIGTERM" not in r.stderr


@pytest.mark.parametrize("group", ["recipe", "suite"])
def test_every_recipe_and_suite_has_a_one_line_description(group):
    """--help shows each file's first comment line: it must be a whole sentence on one line."""
    from distadv.cli.help import _header_line
    from distadv.paths import group_names, recipes_dir

    for name in group_names(group):
        line = _header_line(recipes_dir() / group / f"{name}.yaml")
        assert line.endswith(".") and 10 < len(line) <= 98, (name, line)
