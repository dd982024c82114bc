"""Strategies end to end (one sweep), client faults, and a run that stops when every client fails.

The sweep runs one strategy per runtime path through Flower and Ray (RUNTIME_PATHS), and
every algorithm of `sim/algorithms/` (issue 12: a sweep of every algorithm in one multirun): each
job's cost is mostly Ray starting its client actors, so running all 23 options would cost
minutes while adding no path. Every option's update rule is checked in-process by
tests/unit/test_strategy_behaviour.py, test_algorithms.py and test_privacy.py, and every
option composes (tests/unit/test_config.py). `SIM_TEST_ALL_STRATEGIES=1` sweeps them all.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from helpers import CONF_DIR, TINY, run_cli, run_dirs

ALL_STRATEGIES = sorted(p.stem for p in (CONF_DIR / "strategy").glob("*.yaml"))
RUNTIME_PATHS = {  # strategy option: the path through the ClientApp, the messages and the ServerApp it stands for
    "fedadam": "packed clients, weighted mean, a server optimiser",
    "fedprox": "a per-round client setting (proximal_mu) in the messages",
    "bulyan": "one client per message, a robust aggregator needing most replies",
    "qfedavg": "aggregation from the clients' losses",
    "dp_fixed_accounted": "server-side DP with the privacy accountant",
    "dp_client_adaptive": "client-side DP: Flower mods in the ClientApp",
    "scaffold": "client state (control variates) out with the messages and back with the replies",
    "feddyn": "client state and a server-side correction of the average",
    "fednova": "client state and local-step counts in the replies",
    "ditto": "personal models: a client rule and personalised evaluation",
    "fedper": "personal heads kept on the client",
}
STRATEGIES = ALL_STRATEGIES if os.environ.get("SIM_TEST_ALL_STRATEGIES") == "1" else sorted(RUNTIME_PATHS)


def test_the_runtime_paths_are_strategy_options():
    assert set(RUNTIME_PATHS) <= set(ALL_STRATEGIES)


def test_every_algorithm_of_sim_algorithms_is_in_the_sweep():
    algorithms = {p.stem for p in (CONF_DIR / "strategy").glob("*.yaml")
                  if "_target_: sim.algorithms." in p.read_text()}
    assert algorithms == {"scaffold", "feddyn", "fednova", "ditto", "fedper"}
    assert algorithms <= set(RUNTIME_PATHS)


@pytest.mark.slow
def test_strategies_run_end_to_end_in_one_sweep(tmp_path, data_dir, ray_cluster_address):
    # the jobs attach to one running Ray cluster (a private Ray per job would add a start-up each)
    result = run_cli(
        ["-m", *TINY, f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}",
         f"strategy={','.join(STRATEGIES)}"],
        cwd=tmp_path, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sweep_csv,) = (tmp_path / "results" / "multirun").rglob("sweep.csv")
    sweep = pd.read_csv(sweep_csv)
    assert sorted(sweep["strategy"]) == STRATEGIES
    assert (sweep["status"] == "completed").all(), sweep[["strategy", "status", "error"]]
    for run_dir in run_dirs(tmp_path):
        history = pd.read_csv(run_dir / "history.csv")
        assert history["round"].tolist() == [0, 1, 2], run_dir
        assert np.isfinite(history.loc[1:, ["train_loss", "central_loss"]].to_numpy()).all(), run_dir
        assert history.loc[1:, "train_clients"].tolist() == [3, 3]


@pytest.mark.slow
def test_failing_clients_are_counted_and_never_hang(tmp_path, data_dir, ray_cluster_address):
    result = run_cli(
        [*TINY, f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}", "num_rounds=10", "client.failure_rate=0.3",
         "num_clients=10", "clients_per_round=6", "eval_clients_per_round=4", "strategy=fedmedian"],
        cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    history = pd.read_csv(run_dir / "history.csv").iloc[1:]
    assert len(history) == 10
    assert (history["train_clients"] == 6).all() and (history["eval_clients"] == 4).all()
    failures = history["train_failures"].sum() + history["eval_failures"].sum()
    assert 0 < failures < 100  # about 30 % of 100 client tasks; fedmedian: one client per message
    assert history["central_acc"].notna().all()


@pytest.mark.slow
def test_run_stops_when_every_client_keeps_failing(tmp_path, data_dir, ray_cluster_address):
    result = run_cli(
        [*TINY, f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}", "num_rounds=20", "client.failure_rate=1.0", "max_failed_rounds=2"],
        cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 1
    assert "every client failed in 2 consecutive rounds" in result.stderr
    (run_dir,) = run_dirs(tmp_path)
    history = pd.read_csv(run_dir / "history.csv")
    assert history["round"].tolist() == [0, 1, 2]
    assert (history.loc[1:, "train_failures"] == 3).all()
