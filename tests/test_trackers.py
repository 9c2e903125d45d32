"""log.trackers for real: MLflow's local file store read back with MLflow's own client, next
to TensorBoard's events and results.json; a resumed run continues the same MLflow run and
logs every epoch once; bad names and missing packages are one line, exit 2."""
from __future__ import annotations

import importlib.util
import json
import os
import time

import pytest

from distadv.train import main

pytest.importorskip("mlflow", reason="the trackers extra: pip install -e '.[trackers]'")

TINY = ["recipe=demo", "runtime.max_steps_per_epoch=3", "autoattack.enabled=false",
        "log.progress=never"]
BOTH = "log.trackers=[tensorboard,mlflow]"


def _client(run_dir, monkeypatch):
    """MLflow's client on the run's own file store, and the run id distadv recorded."""
    from mlflow.tracking import MlflowClient
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")   # MLflow 3.x refuses a file store otherwise
    run_id = json.loads((run_dir / "trackers.json").read_text())["mlflow"]["run_id"]
    return MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri()), run_id


def _steps(client, run_id, key):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def _tb(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def test_mlflow_gets_every_scalar_the_config_and_the_final_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run = tmp_path / "r"
    assert main([*TINY, f"run_dir={run}", "optim.epochs=2", BOTH]) == 0
    # the tracking URI and the file-store switch set for the run are put back afterwards
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    client, run_id = _client(run, monkeypatch)
    r = client.get_run(run_id)
    assert r.info.status == "FINISHED" and r.info.run_name == "r"
    assert client.get_experiment(r.info.experiment_id).name == "r"
    acc, results = _tb(run), json.loads((run / "results.json").read_text())
    epoch_tags = [t for t in acc.Tags()["scalars"] if not t.startswith("hparam/")]
    assert {"val/pgd_linf", "val/natural", "train/loss", "lr"} <= set(epoch_tags)
    for tag in epoch_tags:                  # every scalar TensorBoard has, once per epoch
        got = _steps(client, run_id, tag)
        assert [s for s, _ in got] == [1, 2], tag
        assert [v for _, v in got] == pytest.approx([e.value for e in acc.Scalars(tag)], rel=1e-6), tag
    best = dict(_steps(client, run_id, "val/pgd_linf"))[results["best_epoch"]]
    assert best == pytest.approx(results["val_best"]["pgd_linf"], rel=1e-9)
    p, m = r.data.params, r.data.metrics    # the resolved config, flattened; the final metrics
    assert p["recipe"] == "demo" and p["optim.epochs"] == "2" and p["runtime.max_steps_per_epoch"] == "3"
    assert p["log.trackers"] == "['tensorboard', 'mlflow']" and float(p["optim.lr"]) > 0
    for k, v in results["test"].items():
        assert m[f"hparam/test_{k}"] == pytest.approx(v, rel=1e-9), k
    assert m["hparam/flagged"] == 1.0       # autoattack.enabled=false is a flag


def test_resumed_run_continues_the_same_mlflow_run_and_logs_each_epoch_once(tmp_path, monkeypatch):
    """Three sessions of a 3-epoch run. Between the second and the third, latest is truncated,
    so the third resumes from previous and trains epoch 2 again: MLflow, which already holds
    epoch 2, is not given it twice (nor is TensorBoard: purge_step)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "r"
    args = [*TINY, f"run_dir={run}", "optim.epochs=3", BOTH]
    assert main([*args, "runtime.max_epochs_per_session=1"]) == 0
    client, first = _client(run, monkeypatch)
    assert [s for s, _ in _steps(client, first, "val/natural")] == [1]
    assert main([*args, "runtime.max_epochs_per_session=1"]) == 0
    latest = run / "checkpoints/latest"
    latest.write_bytes(latest.read_bytes()[:1000])          # damaged: resume from previous
    assert main(args) == 0
    assert (run / "checkpoints/latest.corrupt").exists()   # the fallback really happened
    client, run_id = _client(run, monkeypatch)
    assert run_id == first
    r = client.get_run(run_id)
    assert len(client.search_runs([r.info.experiment_id])) == 1 and r.info.status == "FINISHED"
    for tag in ("val/natural", "val/pgd_linf", "lr", "train/loss"):
        assert [s for s, _ in _steps(client, run_id, tag)] == [1, 2, 3], tag
        assert [e.step for e in _tb(run).Scalars(tag)] == [1, 2, 3], tag
    # params are the first session's (MLflow refuses changing one): it stopped after 1 epoch
    assert r.data.params["runtime.max_epochs_per_session"] == "1"
    assert "hparam/test_pgd_linf" in r.data.metrics


def test_tracker_added_on_resume_gets_the_earlier_epochs(tmp_path, monkeypatch):
    """log.* may change on resume: an MLflow tracker added in the second session gets the
    first session's epochs from the run's history. log.tensorboard=false still turns
    TensorBoard off (the older switch)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "r"
    args = [*TINY, f"run_dir={run}", "optim.epochs=2", "log.tensorboard=false"]
    assert main([*args, "runtime.max_epochs_per_session=1"]) == 0
    assert not (run / "trackers.json").exists() and not (run / "mlruns").exists()
    assert main([*args, BOTH]) == 0
    assert not (run / "tb").exists()
    client, run_id = _client(run, monkeypatch)
    history = json.loads((run / "progress.json").read_text())["history"]
    got = _steps(client, run_id, "val/pgd_linf")
    assert got == [(h["epoch"], pytest.approx(h["val/pgd_linf"], rel=1e-9)) for h in history]
    assert [s for s, _ in got] == [1, 2]


def test_mlflow_uri_key_sends_the_run_to_that_store(tmp_path, monkeypatch):
    """log.mlflow_uri (or $MLFLOW_TRACKING_URI) replaces the run's own store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store, run = tmp_path / "store", tmp_path / "r"
    assert main([*TINY, f"run_dir={run}", "optim.epochs=1", "log.trackers=[mlflow]",
                 f"log.mlflow_uri={store.as_uri()}", "log.experiment=table1"]) == 0
    assert not (run / "mlruns").exists() and not (run / "tb").exists()
    from mlflow.tracking import MlflowClient
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store.as_uri())
    ids = json.loads((run / "trackers.json").read_text())["mlflow"]
    assert ids["uri"] == store.as_uri()
    assert client.get_experiment(ids["experiment_id"]).name == "table1"
    assert [s for s, _ in _steps(client, ids["run_id"], "val/natural")] == [1]


@pytest.mark.parametrize("trackers,line", [
    ("[tensorboard,mlfow]", "log.trackers: unknown tracker 'mlfow'; choose from: tensorboard, "
                            "mlflow, wandb, aim (e.g. 'log.trackers=[tensorboard,mlflow]')"),
    ("[mlflow,mlflow]", "log.trackers lists 'mlflow' twice; name each tracker once"),
    pytest.param("[tensorboard,wandb]", "log.trackers: wandb is not installed here; pip install "
                 "wandb, or remove wandb from log.trackers",
                 marks=pytest.mark.skipif(importlib.util.find_spec("wandb") is not None,
                                          reason="wandb is installed")),
])
def test_bad_tracker_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, trackers, line):
    run = tmp_path / "r"
    assert main([*TINY, f"run_dir={run}", "optim.epochs=1", f"log.trackers={trackers}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"distadv: error: {line}"]
    assert not run.exists()


@pytest.mark.slow
def test_two_processes_log_one_mlflow_run_from_rank_0(tmp_path, monkeypatch):
    """Under accelerate launch (2 gloo ranks), rank 0 alone logs: one MLflow run, one value
    per epoch (a second logging rank would double every step or add a run)."""
    import subprocess

    from mlflow.tracking import MlflowClient

    from tools.procs import cpu_env, launch_cmd
    run = tmp_path / "r"
    env = cpu_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(launch_cmd("distadv/train.py", *TINY, f"run_dir={run}", "optim.epochs=2",
                                     BOTH), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = json.loads((run / "trackers.json").read_text())["mlflow"]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    assert len(client.search_runs([ids["experiment_id"]])) == 1
    assert [s for s, _ in _steps(client, ids["run_id"], "val/pgd_linf")] == [1, 2]
    assert json.loads((run / "results.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_unreachable_mlflow_server_stops_both_ranks_in_one_line(tmp_path):
    """A tracking server that does not answer: one line naming it and the fix, exit 2 from
    every rank together (rank 0 alone talks to MLflow; the others must not wait in the first
    collective until runtime.timeout_s). Nothing listens on port 1 of this machine."""
    import subprocess

    from tools.procs import cpu_env, launch_cmd
    run = tmp_path / "r"
    env = cpu_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    start = time.monotonic()
    proc = subprocess.run(launch_cmd("distadv/train.py", *TINY, f"run_dir={run}", "optim.epochs=1",
                                     BOTH, "log.mlflow_uri=http://127.0.0.1:1",
                                     "runtime.timeout_s=120"),
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and time.monotonic() - start < 100, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("distadv: error:")]
    mine = [e for e in errors if "MLflow at http://127.0.0.1:1 failed" in e]   # rank 0's
    assert len(mine) == 1 and "check log.mlflow_uri" in mine[0], errors
    assert [e for e in errors if e not in mine] == [          # rank 1 stopped with it
        "distadv: error: rank 0 could not start the trackers; see that rank's error. The last "
        "good checkpoint is kept"], errors
    assert "site-packages/mlflow/" not in proc.stderr         # no MLflow traceback (the
                                                              # launcher prints its own)
