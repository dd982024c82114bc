"""`flwr run .` on Flower's Simulation Runtime and `python -m sim.deploy` on real SuperNodes.

Unit tests of the pure parts (composition, node config checks, the deploy defaults), then
three small end-to-end runs on synthetic data over loopback, compared column by column:
`python -m sim` (the reference), `flwr run .` (same packs: equal exactly) and a
deployment of 3 SuperNodes for 3 rounds in which one SuperNode is stopped after round 1
(one client per message: equal within 1e-5 relative before the kill; afterwards that
client counts as a failure and the run goes on). Every Flower process a test started is
stopped by pid and checked gone; each uses its own FLWR_HOME and free ports.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_config, run_cli, run_dirs, still_alive
from sim.config.compose import absolute_paths, new_run, split_overrides
from sim.config.compose import compose_config as compose_for_flwr
from sim.deploy.launcher import check_config, main as deploy_main, run_overrides
from sim.deploy.roll_call import node_problem
from sim.errors import ConfigError
from sim.deploy.processes import flwr_environment, free_port, local_superlinks, stop_tree

# 3 clients (one per SuperNode in the deployment), all of them train, one evaluates.
SMALL = [
    "dataset=synthetic", "dataset.num_train=300", "dataset.num_test=100", "num_clients=3", "clients_per_round=3",
    "eval_clients_per_round=1", "client.batch_size=16", "client.epochs=1", "checkpoint_every=0",
]
METRICS = ["round", "train_clients", "train_failures", "eval_clients", "eval_failures", "train_loss",
           "fed_eval_loss", "fed_eval_acc", "central_loss", "central_acc"]


# ---------------------------------------------------------------- unit


def test_overrides_compose_exactly_as_the_command_line(tmp_path):
    overrides = split_overrides("dataset=synthetic num_rounds=3 'client.lr=0.05'")
    cfg, run_dir = new_run(overrides, tmp_path)
    cli = compose_config(["dataset=synthetic", "num_rounds=3", "client.lr=0.05"])
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(cli)
    assert run_dir.parent.parent == tmp_path / "results"
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml") == cfg
    assert list(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")) == overrides


def test_relative_paths_start_at_the_base_directory(tmp_path):
    cfg = compose_config(["dataset=synthetic", "dataset.data_dir=/abs/data"])
    moved = absolute_paths(cfg, tmp_path)
    assert moved.dataset.data_dir == "/abs/data"
    assert moved.partition.dir == str(tmp_path / "partitions")
    assert cfg.partition.dir == "partitions"  # the input is not mutated


def test_bad_overrides_give_one_line_naming_the_key():
    with pytest.raises(ConfigError, match="no_such_key") as err:
        compose_for_flwr(["no_such_key=1"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="quoting"):
        split_overrides('dataset="synthetic')


@pytest.mark.parametrize(
    "node_config, wanted",
    [
        ({"num-partitions": 3}, "no partition-id"),
        ({"partition-id": 3, "num-partitions": 3}, "partition-id=3 is out of range: must be 0..2"),
        ({"partition-id": 0, "num-partitions": 4}, "num-partitions=4 but the run has num_clients=3"),
        ({"partition-id": 0, "num-partitions": 3, "data-dir": "/no/such/dir"}, "data-dir=/no/such/dir does not exist"),
    ],
)
def test_a_bad_node_config_is_named_on_the_supernode(node_config, wanted):
    assert wanted in node_problem(node_config, 3)


def test_a_good_node_config_passes(tmp_path):
    assert node_problem({"partition-id": 2, "num-partitions": 3, "data-dir": str(tmp_path)}, 3) is None


def test_deploy_defaults_one_client_per_supernode_and_refuses_a_mismatch(capsys):
    assert run_overrides(["num_rounds=3"], 3) == [
        "num_clients=3", "clients_per_round=3", "eval_clients_per_round=3", "num_rounds=3"]
    assert run_overrides(["clients_per_round=2"], 20)[:2] == ["num_clients=20", "eval_clients_per_round=10"]
    cfg, _ = check_config(run_overrides(["dataset=synthetic"], 3), 3)
    assert cfg.num_clients == 3
    assert deploy_main(["--supernodes", "3", "dataset=synthetic", "num_clients=5"]) == 2  # before anything starts
    err = capsys.readouterr().err.strip()
    assert err == ("error: num_clients=5 but --supernodes 3: each SuperNode is one client; "
                   "set num_clients=3 or --supernodes 5")


# ---------------------------------------------------------------- end to end


def _metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv")[METRICS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir) -> pd.DataFrame:
    """`python -m sim` on SMALL for 2 rounds: the history the other two paths must reproduce."""
    cwd = tmp_path_factory.mktemp("reference")
    result = run_cli([*SMALL, "num_rounds=2", f"dataset.data_dir={data_dir}"], cwd=cwd, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(cwd)
    return _metrics(run_dir)


@pytest.mark.slow
def test_flwr_run_on_the_simulation_runtime_equals_python_m_sim(tmp_path, data_dir, reference):
    home = tmp_path / ".flwr"
    env = flwr_environment(flwr_home=home)
    env.update(FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()), FLWR_LOCAL_CONTROL_API_PORT=str(free_port()),
               PYTHONUNBUFFERED="1")
    overrides = " ".join([*SMALL, "num_rounds=2", f"dataset.data_dir={data_dir}"])
    seen: dict[int, psutil.Process] = {}  # the SuperLink flwr starts detached, and everything below it
    log_path = tmp_path / "flwr-run.log"
    try:
        with log_path.open("w") as out:
            proc = subprocess.Popen(
                ["flwr", "run", str(REPO), "--stream", "--run-config", f'overrides="{overrides}"'],
                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
            )
            deadline = time.monotonic() + 400
            while proc.poll() is None and time.monotonic() < deadline:
                for link in local_superlinks(home):
                    seen[link.pid] = link
                    try:
                        seen.update({p.pid: p for p in link.children(recursive=True)})
                    except psutil.Error:
                        pass
                time.sleep(0.3)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        assert len(local_superlinks(home)) == 1, "flwr run leaves exactly one local SuperLink for this FLWR_HOME"
    finally:
        for link in local_superlinks(home):
            stop_tree(link)
    stdout = log_path.read_text()
    assert proc.returncode == 0, stdout[-4000:]
    assert len(seen) >= 3  # SuperLink, SuperExec, flwr-simulation (with its Ray) were seen while running
    (run_dir,) = run_dirs(tmp_path)
    assert f"run directory: {run_dir}" in stdout.replace("\n", "")
    for name in ("history.csv", "summary.json", "curves.png", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert (run_dir / name).exists(), name
    assert list(pd.read_csv(run_dir / "history.csv").columns) == [*METRICS, "round_s", "elapsed_s"]
    pd.testing.assert_frame_equal(_metrics(run_dir), reference, check_exact=True)
    assert still_alive(list(seen.values())) == []
    assert not local_superlinks(home)


def _supernode(parent: psutil.Process, partition_id: int) -> psutil.Process | None:
    for proc in parent.children(recursive=True):
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if any("flower-supernode" in part for part in cmdline[:3]) and f"partition-id={partition_id} " in " ".join(cmdline):
            return proc
    return None


def _rows(history: Path) -> int:
    return len(history.read_text().splitlines()) - 1 if history.exists() else 0


@pytest.mark.slow
def test_deploy_three_supernodes_one_stopped_mid_run(tmp_path, data_dir, reference):
    # Flower starts one ClientApp process per message on a SuperNode (torch imported each time): a loaded
    # machine needs minutes, so round_timeout is generous; the stopped node deactivates and is not awaited
    args = [*SMALL, "num_rounds=3", "round_timeout=300", f"dataset.data_dir={data_dir}"]
    proc = subprocess.Popen(
        [os.sys.executable, "-m", "sim.deploy", "--supernodes", "3", *args], cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    parent = psutil.Process(proc.pid)
    seen: dict[int, psutil.Process] = {}
    killed = False
    deadline = time.monotonic() + 400
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen.update({p.pid: p for p in parent.children(recursive=True)})
        except psutil.Error:
            pass
        dirs = run_dirs(tmp_path)
        if not killed and dirs and _rows(dirs[0] / "history.csv") >= 2:  # rounds 0 and 1 are in
            node = _supernode(parent, 2)
            assert node is not None
            stop_tree(node)  # SIGTERM to SuperNode 2 (client 2) and its ClientApp process
            killed = True
        time.sleep(0.2)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out[-4000:]
    assert killed
    (run_dir,) = run_dirs(tmp_path)
    history = _metrics(run_dir)
    assert list(history["round"]) == [0, 1, 2, 3]
    # before the stop: python -m sim's numbers (one client per message instead of two packs: sums reorder)
    before, expected = history.iloc[:2], reference.iloc[:2]
    np.testing.assert_allclose(before[METRICS[1:]].to_numpy(float), expected[METRICS[1:]].to_numpy(float),
                               rtol=1e-5, equal_nan=True, err_msg=out[-3000:])
    # after: client 2 is lost in every round it is sampled for training, and the run went on
    after = history.iloc[2:]
    assert (after["train_clients"] == 3).all() and (after["train_failures"] == 1).all(), out[-3000:]
    assert after["central_acc"].notna().all()
    assert (run_dir / "summary.json").exists() and (run_dir / "curves.png").exists()
    assert still_alive(list(seen.values())) == []
    assert not (REPO / ".flwr").exists() or not any((REPO / ".flwr").glob("deploy-*"))


class _Grid:
    """The two things the strategy asks a grid for addressing: its connected node ids."""

    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return list(self.nodes)


class _Observer:
    def record_train(self, *args):
        pass

    def record_evaluate(self, *args):
        pass


def test_a_deployment_sends_each_client_to_its_node_and_loses_a_gone_one_at_once(monkeypatch):
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity

    for attribute in ("_task_id", "_run_id", "_node_id"):  # what a ServerApp process has set up
        monkeypatch.setattr(TaskIdentity, attribute, 1)

    from sim.federation.sampling import RoundPlanner
    from sim.federation.strategy import FedAvg

    sizes = np.full(3, 10)
    planner = RoundPlanner(num_clients=3, clients_per_round=3, eval_clients_per_round=0, seed=0, train_sizes=sizes,
                           val_sizes=sizes, max_packs=3, packable=True)
    strategy = FedAvg(planner=planner, observer=_Observer())
    strategy.node_of_client = {0: 11, 1: 12, 2: 13}
    arrays = ArrayRecord([np.zeros(2, dtype=np.float32)])
    messages = list(strategy.configure_train(1, arrays, ConfigRecord(), _Grid([12, 11])))  # node 13 has gone
    assert sorted((m.metadata.dst_node_id, list(m.content["config"]["cids"])) for m in messages) == [
        (11, [0]), (12, [1])]
    _, clients, failures = strategy._sorted_replies([])  # no replies yet: all three count, client 2 is lost
    assert (clients, failures) == (3, 3)
