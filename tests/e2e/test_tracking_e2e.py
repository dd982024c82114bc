"""Experiment trackers end to end: `python -m sim` with `logger=...`, read back with each
library's own reader (tests/helpers/trackers.py); a missing package is refused first. A sweep
logged to every tracker is checked in tests/e2e/test_sweep.py.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from helpers import TINY, interrupt_at_round, run_cli, run_dirs
from helpers.trackers import assert_matches_history
from sim.tracking import STATE_FILE


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

    args = [*TINY, f"dataset.data_dir={data_dir}", "num_rounds=5", "logger=many", "resources.ray_cpus=1"]
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
