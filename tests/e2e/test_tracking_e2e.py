"""Experiment trackers end to end: `python -m sim` (and a sweep) with `logger=...`, read back
with each library's own reader (tests/helpers/trackers.py); a missing package is refused first.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from helpers.trackers import assert_matches_history, mlflow_client
from helpers import TINY, run_cli, run_dirs
from sim.tracking import STATE_FILE
from sim.tracking.wandb_tracker import offline_records as wandb_records


# --- readers: each library's own -------------------------------------------------------------


@pytest.mark.slow
def test_cli_refuses_missing_package_before_any_work(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['wandb'] = None  # as if not installed\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])}
    result = run_cli([*TINY, "logger=wandb"], cwd=tmp_path, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: logger=wandb needs the wandb package, which is not installed: "
        "run pip install -e '.[wandb]' (or pip install wandb)"]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.*"))


# --- end to end: python -m sim ------------------------------------------------------------------

@pytest.mark.slow
def test_sweep_logs_one_tracker_run_per_job_grouped_by_sweep(tmp_path, data_dir, monkeypatch):
    """`-m seed=0,1 logger=many`: each job read back equals its history.csv; the jobs share a group."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    monkeypatch.delenv("WANDB_MODE", raising=False)  # W&B's default: offline
    result = run_cli(["-m", *TINY, f"dataset.data_dir={data_dir}", "seed=0,1", "logger=many"], cwd=tmp_path,
                     timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = run_dirs(tmp_path)
    assert len(jobs) == 2
    sweep_dir = jobs[0].parent
    group = sweep_dir.relative_to(tmp_path / "results").as_posix()  # multirun/<date>/<time>
    states = [json.loads((job / STATE_FILE).read_text()) for job in jobs]
    for job, state in zip(jobs, states):
        history = pd.read_csv(job / "history.csv")
        assert history["round"].tolist() == [0, 1, 2]
        assert_matches_history(job, history, state)
        assert state["wandb"]["group"] == group and state["mlflow"]["parent_run_id"] is not None
    # TensorBoard: one run per job folder under the sweep
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(sweep_dir))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == ["0/tensorboard", "1/tensorboard"]
    assert all("curves" in multiplexer.GetAccumulator(run).Tags()["images"] for run in multiplexer.Runs())
    # MLflow: both jobs are children of the sweep's one parent run, with params, summary and plots
    client = mlflow_client(states[0]["mlflow"]["tracking_uri"])
    parent = states[0]["mlflow"]["parent_run_id"]
    assert states[1]["mlflow"]["parent_run_id"] == parent
    children = client.search_runs([states[0]["mlflow"]["experiment_id"]],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1"]
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


@pytest.mark.slow
def test_failing_tracker_costs_a_warning_not_the_run(tmp_path, data_dir, ray_cluster_address):
    """MLflow pointed into a regular file (it cannot create its store): TensorBoard and the run go on."""
    (tmp_path / "not-a-dir").write_text("a file where MLflow's store should go\n")
    result = run_cli([*TINY, f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}", "logger=[tensorboard,mlflow]",
                      "logger.mlflow.tracking_uri=not-a-dir/mlruns"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mlflow tracker failed and is off for the rest of this run" in result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path)
    history = pd.read_csv(run_dir / "history.csv")
    assert history["round"].tolist() == [0, 1, 2] and history["central_acc"].notna().all()
    state = json.loads((run_dir / STATE_FILE).read_text())
    assert state["tensorboard"]["last_round"] == 2 and "run_id" not in state["mlflow"]
    assert_matches_history(run_dir, history, {"tensorboard": state["tensorboard"]})


@pytest.mark.slow
def test_resume_continues_the_same_tracker_runs_without_duplicate_steps(tmp_path, data_dir, monkeypatch):
    """Ctrl-C after round 2 of 5, then resume=: every tracker holds rounds 0..5 once, in one run."""
    import signal

    monkeypatch.delenv("WANDB_MODE", raising=False)
    from test_resume import interrupt_at_round

    args = [*TINY, f"dataset.data_dir={data_dir}", "num_rounds=5", "logger=many"]
    returncode, run_dir, _ = interrupt_at_round(tmp_path, args, signal.SIGINT, 2)
    assert returncode == 130
    before = json.loads((run_dir / STATE_FILE).read_text())
    result = run_cli([f"resume={run_dir}"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    after = json.loads((run_dir / STATE_FILE).read_text())
    assert all(after[k]["run_id"] == before[k]["run_id"] for k in ("mlflow", "wandb"))
    history = pd.read_csv(run_dir / "history.csv")
    assert history["round"].tolist() == [0, 1, 2, 3, 4, 5]
    assert_matches_history(run_dir, history, after)
