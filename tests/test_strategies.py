"""Every strategy option end to end (one sweep), client faults, and FedProx's effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import CONF_DIR, TINY, run_cli, run_dirs

STRATEGIES = sorted(p.stem for p in (CONF_DIR / "strategy").glob("*.yaml"))


@pytest.mark.slow
def test_every_strategy_runs_end_to_end_in_one_sweep(tmp_path, data_dir, ray_cluster_address):
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


def test_fedprox_term_limits_client_drift(tmp_path):
    """A large proximal_mu keeps a client's model closer to the global one on skewed data."""
    from flwr.app import ArrayRecord

    from conftest import compose_config
    from sim.federation.client_app import train_pack
    from sim.federation.client_data import ClientData
    from sim.data import load_dataset
    from sim.partition.schemes import partition_labels, split_validation
    from sim.run.recipe import client_config, initial_model

    cfg = compose_config(["dataset=synthetic", "dataset.num_train=600", "dataset.num_test=10", f"dataset.data_dir={tmp_path}"])
    data = load_dataset(cfg.dataset, 0)
    parts = partition_labels(data.train_labels, "pathological", 5, seed=0, classes_per_client=1,
                             class_assignment_mode="first-deterministic")
    train, val = split_validation(parts, 0.0, seed=0)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in train])]).astype(np.int64)
    client_data = ClientData(data.train_images, data.train_labels, np.concatenate(train), offsets,
                             np.zeros(0, np.int64), np.zeros(6, np.int64))
    start = ArrayRecord(initial_model(cfg).state_dict())

    def drift(mu: float) -> float:
        config = client_config(cfg)
        config.update({"cids": [0], "server-round": 1, "proximal-mu": mu, "epochs": 3, "lr": 0.05})
        state, _ = train_pack(client_data, start, config)
        before = start.to_torch_state_dict()
        return float(sum((state[k] - before[k]).pow(2).sum() for k in state).sqrt())

    assert drift(10.0) < 0.7 * drift(0.0)
