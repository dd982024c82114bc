"""Hydra multirun: sweep.csv, a failing job that does not stop the sweep, trackers grouped by sweep, optuna, reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from helpers import TINY, run_cli, run_dirs
from helpers.trackers import assert_sweep_tracked

pytestmark = pytest.mark.slow


def sweep_root(cwd: Path) -> Path:
    (csv_path,) = (cwd / "results" / "multirun").rglob("sweep.csv")
    return csv_path.parent


def test_two_by_two_sweep_with_a_failing_value_logged_to_every_tracker(tmp_path, data_dir, ray_cluster_address,
                                                                       monkeypatch):
    # client.lr=-1 is invalid: those two jobs must fail, the other two must finish, each logged
    # to TensorBoard, MLflow and W&B and grouped by the sweep there (tests/helpers/trackers.py)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # W&B's default: offline
    result = run_cli(["-m", *TINY, f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}",
                      "seed=0,1", "client.lr=0.05,-1", "logger=many"], cwd=tmp_path, timeout=600)
    assert result.returncode != 0  # the exit code says that a job failed
    root = sweep_root(tmp_path)
    sweep = pd.read_csv(root / "sweep.csv")
    assert len(sweep) == 4
    assert {"seed", "client.lr", "status", "final_central_acc", "best_central_acc", "rounds", "wall_s", "run_dir"} <= set(sweep.columns)
    ok = sweep[sweep["client.lr"] == 0.05]
    bad = sweep[sweep["client.lr"] == -1]
    assert (ok["status"] == "completed").all() and (bad["status"] == "failed").all()
    assert bad["error"].str.contains("client.lr=-1").all()
    assert (ok["rounds"] == 2).all() and ok["final_central_acc"].between(0, 1).all()
    for run_dir in ok["run_dir"]:
        assert (Path(run_dir) / "history.csv").exists()
    assert_sweep_tracked(tmp_path / "results", run_dirs(tmp_path), seeds=["0", "1"])
    # the report groups the completed jobs by configuration (overrides minus seed)
    report = run_cli([str(root)], cwd=tmp_path, module="sim.report", timeout=120)
    assert report.returncode == 0, report.stderr
    assert (root / "report.png").exists() and (root / "report.md").exists()


def test_fail_fast_stops_the_sweep_at_the_first_failure(tmp_path, data_dir):
    result = run_cli(["-m", *TINY, f"dataset.data_dir={data_dir}", "fail_fast=true", "client.lr=-1,0.05"], cwd=tmp_path, timeout=300)
    assert result.returncode != 0
    sweep = pd.read_csv(sweep_root(tmp_path) / "sweep.csv")
    assert sweep["status"].tolist() == ["failed"]


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                    reason="hydra-optuna-sweeper is not installed (pip install -e '.[optuna]')")
def test_optuna_sweeper_runs_two_trials(tmp_path, data_dir, ray_cluster_address):
    result = run_cli(
        ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=maximize",
         "client.lr=interval(0.005,0.1)", *TINY, f"dataset.data_dir={data_dir}", "eval_clients_per_round=0",
         f"resources.address={ray_cluster_address}"],
        cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    root = sweep_root(tmp_path)
    sweep = pd.read_csv(root / "sweep.csv")
    assert len(sweep) == 2 and (sweep["status"] == "completed").all()
    assert sweep["client.lr"].between(0.005, 0.1).all()
    assert "best_value" in (root / "optimization_results.yaml").read_text()
