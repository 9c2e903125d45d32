"""MLflow through Accelerate's ``MLflowTracker``, resumable.

Where runs go: ``log.mlflow_uri``, else ``$MLFLOW_TRACKING_URI``, else a file store in the run
directory (``<run>/mlruns``). MLflow 3.x keeps the file store in "maintenance mode" and refuses
it unless ``MLFLOW_ALLOW_FILE_STORE=true``; its database default (sqlite) needs the full
``mlflow`` package (SQLAlchemy, alembic: ~430 MB), ``mlflow-skinny`` (~95 MB) has the file store
only. So for a ``file:`` store distadv sets that variable while the run logs, and puts both
variables back afterwards (``mlflow.set_tracking_uri`` also writes ``$MLFLOW_TRACKING_URI``,
which would send the next in-process run to this run's store).

Resume: the run id is kept in ``<run>/trackers.json``; a second session continues that MLflow
run (same store only), learns the last epoch it holds from the ``lr`` metric's history and
skips epochs up to it; params already in the run are not logged again (MLflow refuses to
change a param, and a resume may change ``runtime.*``: the first session's values stay).
Accelerate's ``MLFLOW_RUN_ID`` / ``MLFLOW_EXPERIMENT_NAME`` variables take priority over both.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

from ..errors import ConfigError
from .trackers import AccelerateBackend

_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE")


class MLflowBackend(AccelerateBackend):
    """An ``MLflowTracker`` whose tracking URI is set while it logs and put back at close."""

    def __init__(self, tracker, config, done: int, saved_env: Dict[str, Optional[str]]):
        super().__init__(tracker, config, done)
        self.saved_env = saved_env

    def close(self) -> None:
        """End the MLflow run; restore the caller's tracking URI and environment."""
        super().close()
        _restore(self.saved_env)


def _restore(saved_env: Dict[str, Optional[str]]) -> None:
    """Put back the tracking URI and the variables as they were before the run set them."""
    import mlflow

    mlflow.set_tracking_uri(saved_env["MLFLOW_TRACKING_URI"])   # None: unset
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _start(tracker) -> None:
    """Start the tracker; a grid element that lost the race to create the shared experiment
    finds it on the second try."""
    from mlflow.exceptions import MlflowException

    try:
        tracker.start()
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        tracker.start()


def mlflow_backend(run_dir: Path, name: str, experiment: str, uri_key: Optional[str], ids: dict,
                   config: Dict[str, object]) -> MLflowBackend:
    """Start (or, with ``ids["mlflow"]`` from the same store, continue) the run's MLflow run;
    records its id in ``ids``. Cost: ~2 s to import mlflow (rank 0, once)."""
    from mlflow.exceptions import MlflowException

    saved_env = {k: os.environ.get(k) for k in _ENV}
    spec = uri_key or saved_env["MLFLOW_TRACKING_URI"]
    try:
        return _open(run_dir, name, experiment, spec, ids, config, saved_env)
    except (MlflowException, OSError) as exc:
        _restore(saved_env)      # e.g. a server that cannot be reached: leave nothing changed
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"MLflow at {spec or run_dir / 'mlruns'} failed: {first}; check "
                          "log.mlflow_uri / $MLFLOW_TRACKING_URI, or remove mlflow from "
                          "log.trackers (the run directory is kept: rerun to resume)") from None
    except BaseException:
        _restore(saved_env)
        raise


def _open(run_dir: Path, name: str, experiment: str, spec: Optional[str], ids: dict,
          config: Dict[str, object], saved_env: Dict[str, Optional[str]]) -> MLflowBackend:
    """``mlflow_backend``'s work; ``spec``: the store asked for (None: the run's own)."""
    import mlflow
    from accelerate.tracking import MLflowTracker
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = spec or (run_dir / "mlruns").resolve().as_uri()
    if uri.startswith("file:"):
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    prev = ids.get("mlflow") or {}
    run_id = prev.get("run_id") if prev.get("uri") == spec else None
    if prev and run_id is None:
        print(f"distadv: MLflow store changed ({prev.get('uri') or 'the run folder'} -> "
              f"{spec or 'the run folder'}); a new MLflow run starts there", flush=True)
    if run_id:
        try:
            client.get_run(run_id)
        except MlflowException:
            print(f"distadv: MLflow run {run_id} is not in {uri}; a new one starts", flush=True)
            run_id = None
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run("KILLED")   # left active by a failed session of this run in this process
        active = None
    tracker = MLflowTracker(experiment_name=experiment, run_id=run_id, run_name=name,
                            nested_run=active is not None)   # inside a caller's own run
    _start(tracker)
    run_id = tracker.active_run.info.run_id
    ids["mlflow"] = {"uri": spec, "run_id": run_id,
                     "experiment_id": tracker.active_run.info.experiment_id}
    held = client.get_run(run_id).data.params
    done = max((m.step for m in client.get_metric_history(run_id, "lr")), default=0)
    return MLflowBackend(tracker, {k: v for k, v in config.items() if k not in held}, done, saved_env)
