"""`flwr run .` and `python -m sim.deploy`, their pure parts: composition of the `overrides`
run-config key, relative paths, node-config checks and the deploy defaults (no Flower process).
The runs themselves are in tests/e2e/test_flwr_run_e2e.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import compose_config
from sim.config.compose import absolute_paths, client_config_from, client_config_text, new_run, split_overrides
from sim.config.compose import compose_config as compose_for_flwr
from sim.deploy.launcher import check_config, main as deploy_main, run_overrides
from sim.deploy.roll_call import node_problem
from sim.errors import ConfigError


# ---------------------------------------------------------------- unit


def test_overrides_compose_exactly_as_the_command_line(tmp_path):
    overrides = split_overrides("dataset=synthetic num_rounds=3 'client.lr=0.05'")
    cfg, run_dir = new_run(overrides, tmp_path)
    cli = compose_config(["dataset=synthetic", "num_rounds=3", "client.lr=0.05"])
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(cli)
    assert run_dir.parent.parent == tmp_path / "results"
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml") == cfg
    assert list(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")) == overrides


@pytest.mark.parametrize("overrides", [
    "", "dataset=synthetic num_rounds=3 client.lr=1e-05", "model=resnet18 partition=dirichlet partition.alpha=0.3",
    "strategy=fedprox 'dataset.path=\"/data/my set.zip\"' dataset=folder",
])
def test_the_config_sent_to_clients_is_the_one_they_would_compose(tmp_path, overrides):
    """Clients read the server's composed config (YAML in the message) instead of running Hydra each."""
    cfg, _ = new_run(split_overrides(overrides), tmp_path)  # what the ServerApp composes (and sends)
    sent = client_config_from(client_config_text(cfg), str(tmp_path))
    composed = absolute_paths(compose_for_flwr(split_overrides(overrides)), tmp_path)
    assert OmegaConf.to_container(sent, resolve=False) == OmegaConf.to_container(composed, resolve=False)
    assert OmegaConf.to_container(sent, resolve=True) == OmegaConf.to_container(composed, resolve=True)


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


def test_a_failed_client_is_named_with_its_supernode_even_when_the_superlink_signs_the_error(caplog, task_identity):
    # a SuperLink answers for a node that stopped heartbeating with an error reply from itself (node 1)
    import logging

    from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

    from sim.federation.sampling import RoundPlanner
    from sim.federation.strategy import FedAvg

    sizes = np.full(3, 10)
    planner = RoundPlanner(num_clients=3, clients_per_round=3, eval_clients_per_round=0, seed=0, train_sizes=sizes,
                           val_sizes=sizes, max_packs=3, packable=True)
    strategy = FedAvg(planner=planner, observer=_Observer())
    strategy.node_of_client = {0: 11, 1: 12, 2: 13}
    sent = list(strategy.configure_train(1, ArrayRecord([np.zeros(2, dtype=np.float32)]), ConfigRecord(),
                                         _Grid([11, 12])))  # node 13 has gone
    by_node = {m.metadata.dst_node_id: m for m in sent}
    ok = Message(RecordDict({"metrics": MetricRecord({"num-examples": 10, "clients": 1, "failures": 0})}),
                 reply_to=by_node[11])
    gone = Message(Error(code=0, reason="Node Unavailable — no heartbeat"), reply_to=by_node[12])
    gone.metadata.__dict__["_src_node_id"] = 1  # as the SuperLink signs it (Metadata has no setter)
    with caplog.at_level(logging.WARNING, logger="sim"):
        _, clients, failures = strategy._sorted_replies([ok, gone])
    assert (clients, failures) == (3, 2)
    assert "clients [1] on SuperNode 12 failed: Node Unavailable — no heartbeat" in caplog.text
    assert "clients [2] failed: no SuperNode serves them" in caplog.text
    assert "clients []" not in caplog.text


def test_a_deployment_aggregates_in_client_order_whatever_the_supernode_ids(monkeypatch):
    # a SuperLink numbers SuperNodes at random: the sum of the replies must not follow those numbers
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    for attribute in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, attribute, 1)

    from sim.federation.sampling import RoundPlanner
    from sim.federation.strategy import FedAvg

    # float32 values whose sum depends on the order it is taken in
    values = {0: np.float32(1e8), 1: np.float32(-1e8), 2: np.float32(1.0)}

    def aggregate(node_of_client: dict[int, int], arrival: list[int]) -> np.ndarray:
        sizes = np.full(3, 10)
        planner = RoundPlanner(num_clients=3, clients_per_round=3, eval_clients_per_round=0, seed=0,
                               train_sizes=sizes, val_sizes=sizes, max_packs=3, packable=True)
        strategy = FedAvg(planner=planner, observer=_Observer())
        strategy.node_of_client = node_of_client
        sent = list(strategy.configure_train(1, ArrayRecord([np.zeros(1, dtype=np.float32)]), ConfigRecord(),
                                             _Grid(sorted(node_of_client.values()))))
        replies = {}
        for msg in sent:
            (cid,) = msg.content["config"]["cids"]
            content = RecordDict({"arrays": ArrayRecord([np.array([values[cid]], dtype=np.float32)]),
                                  "metrics": MetricRecord({"num-examples": 10, "clients": 1, "failures": 0})})
            reply = Message(content, reply_to=msg)  # from the node it was sent to
            replies[cid] = reply
        arrays, _ = strategy.aggregate_train(1, [replies[c] for c in arrival])
        return arrays.to_numpy_ndarrays()[0]

    expected = aggregate({0: 1, 1: 2, 2: 3}, [0, 1, 2])  # ids in client order, as in a simulation
    for node_of_client in ({0: 900, 1: 100, 2: 500}, {0: 7, 1: 300, 2: 5}):
        for arrival in ([2, 0, 1], [1, 2, 0]):
            np.testing.assert_array_equal(aggregate(node_of_client, arrival), expected)


def test_flower_processes_start_their_own_ray_unless_told_otherwise(tmp_path):
    """Flower's Simulation Runtime calls `ray.init()` without an address: RAY_ADDRESS decides."""
    from sim.deploy.processes import flwr_environment

    assert flwr_environment(base={}, flwr_home=tmp_path)["RAY_ADDRESS"] == "local"
    assert flwr_environment(base={"RAY_ADDRESS": "10.0.0.1:6379"})["RAY_ADDRESS"] == "10.0.0.1:6379"


def test_stop_trees_ends_several_process_trees_at_once():
    """Each of three processes with a child of its own: all six gone after one stop_trees call."""
    import subprocess
    import sys

    import psutil

    from sim.deploy.processes import stop_trees

    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
            "print('up', flush=True); time.sleep(120)")
    parents = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    family: list[psutil.Process] = []
    try:
        for proc in parents:
            assert proc.stdout.readline().strip() == "up"  # its child is started
        handles = [psutil.Process(p.pid) for p in parents]
        family = [*handles, *(c for h in handles for c in h.children(recursive=True))]
        assert len(family) == 6
        stop_trees(handles, timeout=10)
        _, alive = psutil.wait_procs(family, timeout=5)
        assert alive == []
    finally:  # whatever stop_trees left, by pid
        for member in family:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        for proc in parents:
            proc.kill()
            proc.wait()
