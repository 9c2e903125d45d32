"""Grids on a real SLURM (slurm/local/start.sh): job arrays through submitit, preemption and
requeue with exact resume, cancel + idempotent re-submission, 2-rank elements, the report,
the sbatch template, and bad input refused before anything is submitted. No mocks of SLURM."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import NO_CHECK, ROOT, run_env

from distadv.grid.status import ACTIVE

PY = sys.executable
FAST = ["runtime.max_steps_per_epoch=4"]     # a few batches per epoch: seconds per element


def env_with(recipes: Path | None = None) -> dict:
    """Environment for submissions; the jobs inherit it (sbatch exports the environment)."""
    env = run_env()
    env["PATH"] = f"{Path(PY).parent}:{env['PATH']}"
    if recipes is not None:
        env["DISTADV_RECIPES"] = str(recipes)
    return env


def recipes_with(tmp_path: Path, grids: dict) -> Path:
    """A copy of recipes/ with extra grid files (name -> YAML text)."""
    root = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes", root)
    for name, text in grids.items():
        (root / "grid" / f"{name}.yaml").write_text(text)
    return root


def submit(*args, env=None, timeout=600):
    """Run slurm/submit.py; returns the CompletedProcess."""
    return subprocess.run([PY, str(ROOT / "slurm/submit.py"), *args], capture_output=True,
                          text=True, env=env or env_with(), timeout=timeout, cwd=ROOT)


def last_jobs(grid_dir: Path) -> dict:
    """Element -> job id of the latest recorded submission."""
    lines = (grid_dir / "submissions.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["jobs"]


def wait_epoch(run_dir: Path, epoch: int, timeout: float = 300) -> int:
    """Poll progress.json until the run has finished ``epoch`` epochs."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            done = json.loads((run_dir / "progress.json").read_text())["epoch"]
            if done >= epoch:
                return done
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{run_dir} did not reach epoch {epoch} in {timeout} s")


def sacct_states(job: str) -> list:
    """Every recorded state of one job, requeues included (sacct -D)."""
    out = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", job],
                         capture_output=True, text=True).stdout
    return [s.split()[0] for s in out.split()]


def final_state(job: str, timeout: float = 300) -> str:
    """The job's last state once slurmdbd has recorded its end. squeue forgets a job before
    sacct learns it ended (seen in CI: gone from squeue, still RUNNING in sacct), so poll sacct."""
    end = time.monotonic() + timeout
    while True:
        states = sacct_states(job)
        if (states and states[-1] not in ACTIVE) or time.monotonic() > end:
            return states[-1] if states else "UNKNOWN"
        time.sleep(1)


def same_run(a: Path, b: Path) -> None:
    """Identical best weights, test metrics and per-epoch validation history."""
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert ra["test"] == rb["test"] and ra["best_epoch"] == rb["best_epoch"]
    ha, hb = (json.loads((d / "progress.json").read_text())["history"] for d in (a, b))
    timing = ("train/epoch_s", "train/images_per_s", "epoch_s")   # wall-clock, not results
    strip = lambda h: [{k: v for k, v in e.items() if k not in timing} for e in h]  # noqa: E731
    assert strip(ha) == strip(hb)
    wa, wb = (load_file(d / "checkpoints/best.safetensors") for d in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_demo_grid_cancel_resubmit_report(slurm, tmp_path):
    """The 4-element demo grid as ONE array; one element cancelled is reported as failed while
    the others finish; re-submitting reruns only it; a third submission does nothing; the
    report's table equals the runs' own results."""
    gd = tmp_path / "demo"
    args = ["grid=demo", "cluster=local", f"grid_dir={gd}", "optim.epochs=3", *FAST]
    r = submit(*args)
    assert r.returncode == 0, r.stderr
    jobs = last_jobs(gd)
    assert len(jobs) == 4 and len({j.split("_")[0] for j in jobs.values()}) == 1  # one array
    victim = "01-demo-eps0.1-s1"
    # Cancel it once it RUNS: SLURM drops an array task cancelled while pending without a
    # record (status UNKNOWN; seen when other tests' jobs filled the cluster).
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and subprocess.run(
            ["squeue", "-h", "-r", "-o", "%T", "-j", jobs[victim]], capture_output=True,
            text=True).stdout.strip() != "RUNNING":
        time.sleep(0.5)
    subprocess.run(["scancel", jobs[victim]], check=True)
    from distadv.grid.submit import wait
    assert wait(str(gd), poll_s=1, timeout_s=400) is False       # one ended without results
    st = subprocess.run([PY, str(ROOT / "slurm/status.py"), str(gd), "--json"],
                        capture_output=True, text=True, check=True)
    rows = {r["name"]: r for r in json.loads(st.stdout)}
    assert rows[victim]["state"] == "CANCELLED" and not rows[victim]["finished"]
    for name, row in rows.items():
        if name != victim:
            err = gd / ".submitit" / f"{jobs[name]}_0_log.err"
            tail = err.read_text()[-3000:] if err.is_file() else "(no log)"
            assert row["state"] == "COMPLETED" and row["finished"] and row["epoch"] == 3, tail
            assert row["best"] is not None and 1 <= row["best_epoch"] <= 3

    r = submit(*args, "wait=true")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resubmitting elements that ended without results: {victim} (CANCELLED)" in r.stdout
    assert list(last_jobs(gd)) == [victim]                     # only the failed one
    r = submit(*args)
    assert r.returncode == 0 and "nothing to submit" in r.stdout
    assert len((gd / "submissions.jsonl").read_text().splitlines()) == 2

    r = subprocess.run([PY, str(ROOT / "tools/report.py"), str(gd)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    table = (gd / "report/table.md").read_text()
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| | demo (eps=0.1) | demo (eps=0.2) |"
    assert [ln.split(" | ")[0] for ln in lines[1:]] == [
        "| Natural examples", "| L-inf PGD attack", "| L2 PGD attack", "| L-inf FGSM attack",
        "| L-inf AutoAttack"]                                  # the end-of-run check's row
    full = {n: json.loads((gd / n / "results.json").read_text()) for n in rows}
    res = {n: r["test"] for n, r in full.items()}
    for line, metric in zip(lines[1:], ["natural", "pgd_linf", "pgd_l2", "fgsm", "aa_linf"]):
        cells = line.strip("| ").split(" | ")[1:]
        means = []
        for cell, eps in zip(cells, ["0.1", "0.2"]):
            members = [n for n in res if f"eps{eps}-" in n]
            vals = [100 * res[n][metric] for n in members]
            mean = sum(vals) / 2
            means.append(mean)
            assert cell.strip("*").startswith(f"{mean:.2f} ± ")
            # a cell is marked exactly when a seed's AutoAttack check flagged that metric
            assert cell.endswith("(FLAG)") == any(
                metric in full[n]["autoattack"]["flagged"] for n in members), (cell, metric)
        best = max(means)
        assert [c.startswith("**") for c in cells] == [round(m, 2) == round(best, 2) for m in means]
    csv = (gd / "report/table.csv").read_text().splitlines()
    assert csv[0] == "config,metric,mean_pct,std_pct,n,of,flagged" and len(csv) == 1 + 2 * 5
    for png in ("eps.png", "curves.png"):
        assert (gd / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # One TensorBoard root: every element's HParams session lies under the grid directory.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    for name in rows:
        acc = EventAccumulator(str(gd / name / "tb")).Reload()
        assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


@pytest.mark.slow
def test_preemption_and_requeue_resume_exactly(slurm, tmp_path):
    """USR2 (submitit's preemption path: checkpoint + requeue) and a plain `scontrol requeue`
    mid-training: both jobs are requeued, resume from `latest`, and end with the weights,
    history and test metrics of an uninterrupted run of the same element."""
    recipes = recipes_with(tmp_path, {"one": "recipes: [demo]\nseeds: [3]\n"})
    env = env_with(recipes)
    dirs = {k: tmp_path / k for k in ("plain", "usr2", "requeue")}
    for d in dirs.values():
        # BasicNet at 32x32: the epoch cost the waits were set for; no end-of-run check
        r = submit("grid=one", "cluster=local", f"grid_dir={d}", "optim.epochs=8",
                   "model.name=basicnet", "data.image_size=32", *NO_CHECK, env=env)
        assert r.returncode == 0, r.stderr
    name = "00-demo-s3"
    jobs = {k: last_jobs(d)[name] for k, d in dirs.items()}
    done = {"usr2": wait_epoch(dirs["usr2"] / name, 2)}     # interrupt each as soon as it
    subprocess.run(["scancel", "--signal=USR2", jobs["usr2"]], check=True)   # has 2 epochs
    done["requeue"] = wait_epoch(dirs["requeue"] / name, 2)
    subprocess.run(["scontrol", "requeue", jobs["requeue"]], check=True)
    from distadv.grid.submit import wait
    for d in dirs.values():
        assert wait(str(d), poll_s=1, timeout_s=400) is True
    for k in ("usr2", "requeue"):
        assert done[k] < 8, f"{k}: the run finished before it was interrupted"
        assert final_state(jobs[k]) == "COMPLETED" and "REQUEUED" in sacct_states(jobs[k])
        log = (dirs[k] / ".submitit" / f"{jobs[k]}_0_log.out").read_text()
        assert "(resume, epoch " in log, log[-2000:]
        same_run(dirs["plain"] / name, dirs[k] / name)
    usr2_log = (dirs["usr2"] / ".submitit" / f"{jobs['usr2']}_0_log.out").read_text()
    assert "Requeued job" in usr2_log                          # submitit's checkpoint path


@pytest.mark.slow
def test_requeue_with_generated_data_resumes_the_draws(slurm, tmp_path):
    """data.extra, drawn without replacement, through a `scontrol requeue` mid-training: the
    requeued job resumes the sampler's cursor from `latest` and ends with the draws (sampler
    state), weights and history of an uninterrupted run."""
    from distadv.engine.checkpoint import load_state
    from test_generated import make_set
    gen = make_set(tmp_path / "gen", 500, shape=(32, 32, 1))[0]     # the demo's digits at 32x32
    env = env_with(recipes_with(tmp_path, {"one": "recipes: [demo]\nseeds: [3]\n"}))
    dirs = {k: tmp_path / k for k in ("plain", "requeue")}
    for d in dirs.values():
        r = submit("grid=one", "cluster=local", f"grid_dir={d}", "optim.epochs=6",
                   "model.name=basicnet", "data.image_size=32", f"data.extra={gen}",
                   "data.extra_replacement=false", *NO_CHECK, env=env)
        assert r.returncode == 0, r.stderr
    name = "00-demo-s3"
    jobs = {k: last_jobs(d)[name] for k, d in dirs.items()}
    done = wait_epoch(dirs["requeue"] / name, 2)
    subprocess.run(["scontrol", "requeue", jobs["requeue"]], check=True)
    from distadv.grid.submit import wait
    for d in dirs.values():
        assert wait(str(d), poll_s=1, timeout_s=400) is True
    assert done < 6, "the run finished before it was requeued"
    assert final_state(jobs["requeue"]) == "COMPLETED" and "REQUEUED" in sacct_states(jobs["requeue"])
    log = (dirs["requeue"] / ".submitit" / f"{jobs['requeue']}_0_log.out").read_text()
    assert "(resume, epoch " in log, log[-2000:]
    same_run(dirs["plain"] / name, dirs["requeue"] / name)
    sa, sb = (load_state(dirs[k] / name / "checkpoints/latest")["sampler"] for k in dirs)
    assert sa == sb and sa["epoch"] == 6 and sa["sources"][0]["cursor"] > 500   # past one pass


@pytest.mark.slow
def test_two_rank_element_forms_one_process_group(slurm, tmp_path):
    """cpu_tasks_per_node=2: SLURM starts 2 tasks; submitit's TorchDistributedEnvironment
    makes them one gloo process group of world size 2 running the normal training entry."""
    recipes = recipes_with(tmp_path, {"one": "recipes: [demo]\n"})
    gd = tmp_path / "g"
    r = submit("grid=one", "cluster=local", "cluster.cpu_tasks_per_node=2", f"grid_dir={gd}",
               "optim.epochs=1", *FAST, "wait=true", env=env_with(recipes))
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((gd / "00-demo-s0/results.json").read_text())
    assert res["world_size"] == 2 and res["distributed"]["type"] == "MULTI_CPU"
    job = last_jobs(gd)["00-demo-s0"]
    logs = [(gd / ".submitit" / f"{job}_{t}_log.out").read_text() for t in (0, 1)]
    assert "rank 0/2" in logs[0] and "rank 1/2" in logs[1]


@pytest.mark.slow
def test_sbatch_template_runs_two_ranks(slurm, tmp_path):
    """slurm/train.sbatch (no submitit): srun + accelerate launch, 2 ranks on this node."""
    env = env_with()
    env.update(DISTADV_PROCS_PER_NODE="2", ACCELERATE_USE_CPU="1")
    out = tmp_path / "out.txt"
    job = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=2", f"--output={out}",
                          str(ROOT / "slurm/train.sbatch"), "recipe=demo", "optim.epochs=1",
                          *FAST, f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=True).stdout.strip()
    assert final_state(job) == "COMPLETED", out.read_text()
    assert json.loads((tmp_path / "run/results.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("args, message", [
    (["grid=nope", "cluster=local"], "unknown grid 'nope'; valid grids: badkey, demo, empty, fig1_eps"),
    (["grid=demo", "cluster=nope"], "unknown cluster profile 'nope'; valid profiles:"),
    (["grid=demo", "cluster=local", "cluster.gpus=2"], "profile keys: partition"),
    (["grid=demo", "cluster=local", "cluster.nodes=two"], "cluster profile 'local'"),
    (["grid=demo", "cluster=local", "cluster.signal_delay_s=1800"],
     "signal_delay_s (1800) must be below the time limit (30 min = 1800 s)"),
    (["grid=demo", "cluster=local", "optim.nope=1"], "element 00-demo-eps0.1-s0: unknown key"),
    (["grid=demo", "cluster=local", "optim.lr=fast"], "element 00-demo-eps0.1-s0"),
    (["grid=empty", "cluster=local"], "the sweep over 'seed' is empty"),
    (["grid=badkey", "cluster=local"], "grid keys: description, recipes"),
    (["grid=demo"], "give grid=NAME and cluster=PROFILE"),
])
def test_bad_input_is_refused_before_submission(args, message, tmp_path):
    """One line naming the problem, exit 2, and no grid directory (submitit's job folder would
    be inside it, so nothing can have been submitted)."""
    recipes = recipes_with(tmp_path, {"empty": "recipes: [demo]\nsweep: {seed: []}\n",
                                      "badkey": "recipes: [demo]\nsweeps: {seed: [1]}\n"})
    gd = tmp_path / "g"
    r = submit(*args, f"grid_dir={gd}", env=env_with(recipes))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("distadv: error: ") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not gd.exists()


def test_sbatch_refusal_is_shown_and_recorded(slurm, tmp_path):
    """sbatch rejects the array (unknown partition): its message is shown, exit 2, the attempt
    is recorded and status lists every element as not submitted."""
    gd = tmp_path / "g"
    r = submit("grid=demo", "cluster=local", "cluster.partition=nosuchpart", f"grid_dir={gd}")
    assert r.returncode == 2
    assert "sbatch refused the job array" in r.stderr and "invalid partition" in r.stderr.lower()
    record = json.loads((gd / "submissions.jsonl").read_text())
    assert "error" in record and len(record["elements"]) == 4 and "jobs" not in record
    st = subprocess.run([PY, str(ROOT / "slurm/status.py"), str(gd), "--json"],
                        capture_output=True, text=True, check=True)
    assert {row["state"] for row in json.loads(st.stdout)} == {"NOT_SUBMITTED"}


def test_concurrent_and_conflicting_submissions_refused(slurm, tmp_path):
    """A second submission while one holds the grid's lock refuses to run; a grid directory
    holding other elements (other overrides) is refused; neither submits anything."""
    from distadv.grid.spec import expand, load_grid
    from distadv.grid.store import GridDir
    gd = tmp_path / "g"
    with GridDir(gd).lock():
        r = submit("grid=demo", "cluster=local", f"grid_dir={gd}")
    assert r.returncode == 2 and "another submission of this grid is running (pid" in r.stderr
    r = submit("grid=demo", "cluster=local", f"grid_dir={gd}", "dry_run=true")
    assert r.returncode == 0 and "dry run: would submit 4 element(s)" in r.stdout
    assert not (gd / "grid.json").exists()                      # a dry run records nothing
    GridDir(gd).adopt("demo", expand("demo", load_grid("demo")), {"x": None})
    r = submit("grid=demo", "cluster=local", f"grid_dir={gd}", "optim.epochs=2")
    assert r.returncode == 2 and "holds grid 'demo' with other elements" in r.stderr
    assert not (gd / "submissions.jsonl").exists() and not (gd / ".submitit").exists()


def test_every_seed_experiment_has_a_grid():
    """table1..table6, fig1_eps and fig2_overfit expand and compose (every element's config
    is valid) without a cluster."""
    from distadv.grid.spec import check_elements, expand, grid_names, load_grid
    names = grid_names()
    for g in [f"table{i}" for i in range(1, 7)] + ["fig1_eps", "fig2_overfit", "demo"]:
        assert g in names
        elements = expand(g, load_grid(g))
        check_elements(g, elements)
        assert len({e.name for e in elements}) == len(elements)
    fig1 = expand("fig1_eps", load_grid("fig1_eps"))
    assert [dict(e.values)["train_attacks.linf.eps"] for e in fig1] == [
        0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    assert all("early_stop.patience=0" in e.overrides
               for e in expand("fig2_overfit", load_grid("fig2_overfit")))


def test_fmnist_grid_sweeps_eps_for_pgd_at_only():
    """natural, PGD-AT and TRADES, 2 seeds, plus PGD-AT's training-eps sweep (sweep_only)."""
    from distadv.errors import GridError
    from distadv.grid.spec import check_elements, expand, load_grid
    grid = load_grid("fmnist")
    elements = expand("fmnist", grid)
    check_elements("fmnist", elements)
    by = lambda r: [e for e in elements if f"recipe={r}" in e.overrides]
    assert [len(by(r)) for r in ("fmnist_natural", "fmnist_linf", "fmnist_trades")] == [2, 8, 2]
    assert all(not e.values for e in by("fmnist_natural") + by("fmnist_trades"))
    assert sorted({dict(e.values)["train_attacks.linf.eps"] for e in by("fmnist_linf")}) == [
        0.05, 0.1, 0.15, 0.2]
    assert {e.seed for e in elements} == {0, 1}
    grid.sweep_only = ["fmnist_nope"]
    with pytest.raises(GridError, match="sweep_only names fmnist_nope, which is not in its recipes"):
        expand("fmnist", grid)


@pytest.mark.slow
def test_time_limit_requeues_and_resumes(slurm, tmp_path):
    """A 1-minute time limit with USR2 45 s before it: submitit sees a time-out (not a
    preemption), requeues within max_requeues, and the element still finishes with the
    results of an uninterrupted run. SLURM checks limits every ~30 s, so this takes minutes."""
    recipes = recipes_with(tmp_path, {"one": "recipes: [demo]\nseeds: [5]\n"})
    env = env_with(recipes)
    slow, plain = tmp_path / "slow", tmp_path / "plain"
    # BasicNet: the epoch cost these timings were measured with (the demo's SmallCNN is ~3x slower)
    common = ["grid=one", "cluster=local", "optim.epochs=14", "model.name=basicnet",
              "data.image_size=32", *NO_CHECK]
    r = submit(*common, f"grid_dir={slow}", "cluster.time_min=1", "cluster.signal_delay_s=45",
               "cluster.max_requeues=20", env=env)
    assert r.returncode == 0, r.stderr
    r = submit(*common, f"grid_dir={plain}", "wait=true", env=env)
    assert r.returncode == 0, r.stderr
    from distadv.grid.submit import wait
    assert wait(str(slow), poll_s=2, timeout_s=500) is True
    job = last_jobs(slow)["00-demo-s5"]
    log = (slow / ".submitit" / f"{job}_0_log.out").read_text()
    assert "this job is timed-out" in (slow / ".submitit" / f"{job}_0_log.err").read_text() + log
    assert "REQUEUED" in sacct_states(job) and "(resume, epoch " in log
    same_run(plain / "00-demo-s5", slow / "00-demo-s5")
