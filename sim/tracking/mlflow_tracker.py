"""MLflow: one MLflow run per simulation run, in a local store by default.

    mlflow ui --backend-store-uri results/mlruns     # needs the full `mlflow` package for the UI

`tracking_uri` is a folder (MLflow's file store, created on first use; MLflow 3 keeps it
behind `MLFLOW_ALLOW_FILE_STORE=true`, which this tracker sets for a folder URI) or any
MLflow URI (`sqlite:///mlflow.db`, `http://host:5000`). Params: the flattened resolved
config and `overrides`; metrics: every history.csv column per round (step = round) and
summary.json's figures at the last round; artifacts: curves.png, summary.json and the
partition plot. A multirun's jobs are child runs of one parent run per sweep (MLflow's
nested runs), so the UI compares them side by side. A resume reopens the same run id and
continues after the last round its store holds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from sim.tracking.base import RunInfo, Tracker, numeric_summary

MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit
MAX_PARAM_CHARS = 6000  # MLflow 3's longest param value
SWEEP_TAG, ROLE_TAG = "sim.sweep", "sim.role"


def store_uri(tracking_uri: str) -> str:
    """A folder -> its absolute `file://` URI (relative to the launch directory); URIs unchanged."""
    if "://" in tracking_uri or tracking_uri.startswith(("file:", "databricks")):
        return tracking_uri
    return Path(tracking_uri).expanduser().resolve().as_uri()


class MLflowTracker(Tracker):
    """Logs through `mlflow.MlflowClient` (no global active run, so sweeps and threads are safe)."""

    requires = "mlflow"
    extra = "mlflow"

    def __init__(self, tracking_uri: str = "results/mlruns", experiment: str = "sim", run_name: str | None = None):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.client = None
        self.run_id = self.parent_id = None
        self.step = 0

    def start(self, info: RunInfo, state: dict[str, Any]) -> int | None:
        uri = store_uri(self.tracking_uri)
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: file store on request only
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        if state.get("run_id"):  # resume: the same run
            self.run_id, self.parent_id = state["run_id"], state.get("parent_run_id")
            self.client.update_run(self.run_id, status="RUNNING")
            steps = [m.step for m in self.client.get_metric_history(self.run_id, "elapsed_s")]  # in every row
            return max(steps, default=-1)  # the last round the store really holds
        experiment_id = self._experiment_id()
        tags = {"sim.run_dir": str(Path(info.run_dir).resolve()), "sim.overrides": " ".join(info.overrides)}
        if info.group is not None:
            self.parent_id = self._sweep_run(experiment_id, info.group)
            tags.update({"mlflow.parentRunId": self.parent_id, SWEEP_TAG: info.group, "sim.job": str(info.job)})
        run = self.client.create_run(experiment_id, run_name=self.run_name or info.label, tags=tags)
        self.run_id = run.info.run_id
        state.update(run_id=self.run_id, parent_run_id=self.parent_id, experiment_id=experiment_id, tracking_uri=uri)
        return None

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except Exception:  # another process created it first
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _sweep_run(self, experiment_id: str, group: str) -> str:
        """The parent run of sweep `group`: found by its tags, created by the sweep's first job."""
        query = f"tags.`{SWEEP_TAG}` = '{group}' and tags.`{ROLE_TAG}` = 'sweep'"
        found = self.client.search_runs([experiment_id], filter_string=query, max_results=1)
        if found:
            return found[0].info.run_id
        run = self.client.create_run(experiment_id, run_name=group, tags={SWEEP_TAG: group, ROLE_TAG: "sweep"})
        return run.info.run_id

    def log_params(self, params: Mapping[str, Any], overrides: tuple[str, ...]) -> None:
        from mlflow.entities import Param

        items = [Param(k, ("null" if v is None else str(v))[:MAX_PARAM_CHARS]) for k, v in params.items()]
        items.append(Param("overrides", " ".join(overrides)[:MAX_PARAM_CHARS]))
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])
        self.step = step

    def log_summary(self, summary: Mapping[str, Any], files: list[Path]) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(summary.get("rounds") or self.step)
        figures = [Metric(k, v, now, step) for k, v in numeric_summary(summary).items()]
        self.client.log_batch(self.run_id, metrics=figures)
        for path in files:
            self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str) -> None:
        if self.run_id is None:
            return
        self.client.set_terminated(self.run_id, status)
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, "FINISHED")  # the sweep's end time follows its last job
