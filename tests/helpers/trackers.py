"""Reading tracker output back with each library's own reader: TensorBoard, MLflow, W&B offline."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from sim.run.history import COLUMNS
from sim.tracking.wandb_tracker import offline_history as wandb_history


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
        assert [step for step, _ in logged] == history["round"].tolist()
        for column, points in expected.items():
            assert [(s, row[column]) for s, row in logged if column in row] == points, column
