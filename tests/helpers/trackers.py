"""Reading tracker output back with each library's own reader: TensorBoard, MLflow, W&B offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from sim.run.history import COLUMNS
from sim.tracking import STATE_FILE
from sim.tracking.wandb_tracker import offline_history as wandb_history
from sim.tracking.wandb_tracker import offline_records as wandb_records


METRICS = [c for c in COLUMNS if c != "round"]


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every event file in `log_dir` (TensorBoard's reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def mlflow_client(uri: str):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def expected_points(history: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
    """{column: [(round, value)]} of every non-empty history cell (round excluded: it is the step)."""
    return {c: [(int(r), float(v)) for r, v in zip(history["round"], history[c]) if pd.notna(v)] for c in METRICS}


def assert_matches_history(run_dir: Path, history: pd.DataFrame, state: dict) -> None:
    """Each tracker in `state` holds every history cell once, at its round."""
    expected = {k: v for k, v in expected_points(history).items() if v}
    if "tensorboard" in state:
        scalars = tensorboard_scalars(Path(state["tensorboard"]["log_dir"]))
        for column, points in expected.items():
            assert [s for s, _ in scalars[column]] == [s for s, _ in points], column
            assert [v for _, v in scalars[column]] == pytest.approx([v for _, v in points], rel=1e-6), column
    if "mlflow" in state:
        client, run_id = mlflow_client(state["mlflow"]["tracking_uri"]), state["mlflow"]["run_id"]
        for column, points in expected.items():
            got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, column))
            assert got == points, column  # exact floats, one value per step
    if "wandb" in state:
        logged = wandb_history(run_dir, state["wandb"]["run_id"])
        steps = [step for step, _ in logged]
        assert steps == history["round"].tolist(), (steps, sorted(Path(run_dir, "wandb").glob("offline-run-*/*.wandb")))
        for column, points in expected.items():
            assert [(s, row[column]) for s, row in logged if column in row] == points, column


def assert_sweep_tracked(results: Path, jobs: list[Path], seeds: list[str]) -> None:
    """A sweep's finished `jobs` (run with `logger=many`) as each tracker's reader sees them.

    Each job read back equals its history.csv; the jobs share the sweep as their group:
    one TensorBoard run per job folder, MLflow child runs of one parent, W&B's run group.
    """
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    sweep_dir = jobs[0].parent
    group = sweep_dir.relative_to(results).as_posix()  # multirun/<date>/<time>
    states = [json.loads((job / STATE_FILE).read_text()) for job in jobs]
    for job, state in zip(jobs, states):
        history = pd.read_csv(job / "history.csv")
        assert_matches_history(job, history, state)
        assert state["wandb"]["group"] == group and state["mlflow"]["parent_run_id"] is not None
    # TensorBoard: one run per finished job folder under the sweep
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(sweep_dir))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == sorted(f"{job.name}/tensorboard" for job in jobs)
    assert all("curves" in multiplexer.GetAccumulator(run).Tags()["images"] for run in multiplexer.Runs())
    # MLflow: every job is a child of the sweep's one parent run, with params, summary and plots
    client = mlflow_client(states[0]["mlflow"]["tracking_uri"])
    parent = states[0]["mlflow"]["parent_run_id"]
    assert all(state["mlflow"]["parent_run_id"] == parent for state in states)
    children = client.search_runs([states[0]["mlflow"]["experiment_id"]],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.params["seed"] for r in children) == seeds
    for job, state in zip(jobs, states):
        run = client.get_run(state["mlflow"]["run_id"])
        summary = json.loads((job / "summary.json").read_text())
        assert run.info.status == "FINISHED" and run.data.metrics["final_central_acc"] == summary["final_central_acc"]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"curves.png", "summary.json"} <= artifacts and any(a.endswith("_labels.png") for a in artifacts)
        # W&B: the run record carries the sweep as its group; summary and results artifact logged
        records = list(wandb_records(job, state["wandb"]["run_id"]))
        assert [r.run.run_group for r in records if r.HasField("run")] == [group]
        assert any(r.HasField("artifact") and r.artifact.type == "results" for r in records)
        assert any(u.key == "final_central_acc" for r in records if r.HasField("summary") for u in r.summary.update)
