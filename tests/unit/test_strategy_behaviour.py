"""What the strategies do to one round's replies, checked against their update rules by hand.

The real classes of `sim.federation.strategy` (the Flower strategies with the harness's client
sampling), built from conf/strategy/*.yaml as a run builds them, get one round's replies as
hand-made Flower Messages; no Ray, no ServerApp. The only stand-in is the grid, of which
the strategies call `get_node_ids` while addressing a round.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from hydra.utils import instantiate

from helpers import compose_config
from sim.federation.sampling import RoundPlanner

SIZE = 4000  # parameters of the toy model: enough to measure a noise std to a few per cent


pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py: Flower needs it to build messages


class Grid:
    """The one Grid method a strategy calls while configuring a round: the connected supernodes."""

    def __init__(self, num_nodes: int):
        self.nodes = list(range(101, 101 + num_nodes))

    def get_node_ids(self) -> list[int]:
        return self.nodes


class Observer:
    """Records what the strategy reports per round (the history writer's role in a run)."""

    def __init__(self):
        self.train: list[tuple[int, int, int]] = []

    def record_train(self, server_round, clients, failures, metrics):
        self.train.append((server_round, clients, failures))

    def record_evaluate(self, server_round, clients, failures, metrics):
        pass


def build(strategy: str, num_clients: int, *overrides: str):
    """The strategy of `conf/strategy/<strategy>.yaml`, made as `sim.run.recipe` makes it, for one client per message."""
    cfg = compose_config([f"strategy={strategy}", "dataset=synthetic", f"num_clients={num_clients}",
                          f"clients_per_round={num_clients}", "eval_clients_per_round=0", *overrides])
    planner = RoundPlanner(
        num_clients=num_clients, clients_per_round=num_clients, eval_clients_per_round=0, seed=0,
        train_sizes=np.full(num_clients, 100), val_sizes=np.zeros(num_clients, np.int64),
        max_packs=num_clients, packable=False,
    )
    return instantiate(cfg.strategy, _partial_=True)(planner=planner, observer=Observer())


def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()})


def one_round(strategy, server_round: int, start: dict[str, np.ndarray], clients: dict[int, dict[str, np.ndarray]],
              weights: dict[int, int] | None = None) -> dict[str, np.ndarray]:
    """Configure a round, answer client `cid` with `clients[cid]` (weight `weights[cid]`), aggregate."""
    instructions = list(strategy.configure_train(server_round, record(start), ConfigRecord(), Grid(len(clients))))
    assert len(instructions) == len(clients)
    replies = []
    for msg in instructions:
        (cid,) = msg.content["config"]["cids"]
        metrics = MetricRecord({"num-examples": (weights or {}).get(cid, 100), "clients": 1, "failures": 0,
                                "train_loss": 1.0})
        replies.append(Message(RecordDict({"arrays": record(clients[cid]), "metrics": metrics}), reply_to=msg))
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return {k: v.numpy() for k, v in arrays.items()}


# --- robust aggregation -------------------------------------------------------------------------------

HONEST, POISON = 1.0, 100.0


def poisoned_round(strategy) -> np.ndarray:
    """Seven clients: six near 1.0, one at 100.0 (the last); the aggregate of round 1."""
    rng = np.random.default_rng(0)
    clients = {cid: {"w": HONEST + 0.01 * rng.standard_normal(SIZE)} for cid in range(6)}
    clients[6] = {"w": np.full(SIZE, POISON)}
    return one_round(strategy, 1, {"w": np.zeros(SIZE)}, clients)["w"]


def test_fedavg_is_moved_by_one_poisoned_client():
    aggregate = poisoned_round(build("fedavg", 7))
    expected = (6 * HONEST + POISON) / 7  # equal weights: the plain mean
    np.testing.assert_allclose(aggregate, expected, atol=0.05)


@pytest.mark.parametrize("strategy,overrides", [
    ("fedmedian", []),
    ("fedtrimmedavg", ["strategy.beta=0.2"]),  # trims one model at each end of seven
    ("krum", ["strategy.num_malicious_nodes=1"]),
    ("multikrum", ["strategy.num_malicious_nodes=1", "strategy.num_nodes_to_select=3"]),
    ("bulyan", ["strategy.num_malicious_nodes=1"]),  # needs 4f + 3 = 7 clients
])
def test_robust_aggregators_resist_a_poisoned_client(strategy, overrides):
    aggregate = poisoned_round(build(strategy, 7, *overrides))
    assert np.abs(aggregate - HONEST).max() < 0.05, (strategy, float(np.abs(aggregate - HONEST).max()))


def test_krum_returns_one_honest_model_and_median_the_coordinate_median():
    rng = np.random.default_rng(0)
    clients = {cid: {"w": HONEST + 0.01 * rng.standard_normal(SIZE)} for cid in range(6)}
    clients[6] = {"w": np.full(SIZE, POISON)}
    krum = one_round(build("krum", 7, "strategy.num_malicious_nodes=1"), 1, {"w": np.zeros(SIZE)}, clients)["w"]
    assert any(np.array_equal(krum, clients[cid]["w"]) for cid in range(6))  # a client's own model
    median = one_round(build("fedmedian", 7), 1, {"w": np.zeros(SIZE)}, clients)["w"]
    np.testing.assert_allclose(median, np.median(np.stack([clients[c]["w"] for c in range(7)]), axis=0))


# --- server-side optimisers -----------------------------------------------------------------------------

def two_rounds(strategy):
    """Two rounds from x0 with two clients of weights 1 and 3; returns x0, the FedAvg means and the results."""
    rng = np.random.default_rng(1)
    x0 = {"w": rng.standard_normal(SIZE)}
    results, means, start = [], [], x0
    for server_round in (1, 2):
        clients = {0: {"w": start["w"] + rng.standard_normal(SIZE)}, 1: {"w": start["w"] + 0.5 * rng.standard_normal(SIZE)}}
        means.append((clients[0]["w"] * 1 + clients[1]["w"] * 3) / 4)  # example-weighted FedAvg
        start = one_round(strategy, server_round, start, clients, weights={0: 1, 1: 3})
        results.append(start["w"])
    return x0["w"], means, results


def test_fedavg_is_the_example_weighted_mean():
    _, means, results = two_rounds(build("fedavg", 2))
    for mean, result in zip(means, results):
        np.testing.assert_allclose(result, mean, rtol=1e-12)


def test_fedadam_follows_adam_on_the_averaged_update():
    eta, b1, b2, tau = 0.01, 0.9, 0.99, 0.001  # conf/strategy/fedadam.yaml
    x, means, results = two_rounds(build("fedadam", 2))
    m = v = np.zeros(SIZE)
    for t, (mean, result) in enumerate(zip(means, results), start=1):
        delta = mean - x
        m = b1 * m + (1 - b1) * delta
        v = b2 * v + (1 - b2) * delta**2
        step = eta * math.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1))  # Flower's bias correction (round t)
        x = x + step * m / (np.sqrt(v) + tau)
        np.testing.assert_allclose(result, x, rtol=1e-10, atol=1e-12)
        assert np.abs(result - mean).max() > 0.1  # not FedAvg


def test_fedyogi_follows_yogi_on_the_averaged_update():
    eta, b1, b2, tau = 0.01, 0.9, 0.99, 0.001  # conf/strategy/fedyogi.yaml
    x, means, results = two_rounds(build("fedyogi", 2))
    m = v = np.zeros(SIZE)
    for mean, result in zip(means, results):
        delta = mean - x
        m = b1 * m + (1 - b1) * delta
        v = v - (1 - b2) * delta**2 * np.sign(v - delta**2)
        x = x + eta * m / (np.sqrt(v) + tau)
        np.testing.assert_allclose(result, x, rtol=1e-10, atol=1e-12)
        assert np.abs(result - mean).max() > 0.1


def test_fedadagrad_follows_adagrad_on_the_averaged_update():
    eta, tau = 0.01, 0.001  # conf/strategy/fedadagrad.yaml (Flower's FedAdagrad: beta_1 = 0, m = delta)
    x, means, results = two_rounds(build("fedadagrad", 2))
    v = np.zeros(SIZE)
    for mean, result in zip(means, results):
        delta = mean - x
        v = v + delta**2
        x = x + eta * delta / (np.sqrt(v) + tau)
        np.testing.assert_allclose(result, x, rtol=1e-10, atol=1e-12)


def test_fedavgm_applies_server_momentum():
    lr, momentum = 1.0, 0.9  # conf/strategy/fedavgm.yaml
    x, means, results = two_rounds(build("fedavgm", 2))
    velocity = None
    for mean, result in zip(means, results):
        pseudo_gradient = x - mean
        velocity = pseudo_gradient if velocity is None else momentum * velocity + pseudo_gradient
        x = x - lr * velocity
        np.testing.assert_allclose(result, x, rtol=1e-10, atol=1e-12)
    assert np.abs(results[1] - means[1]).max() > 0.1  # round 2 differs from FedAvg by the momentum


# --- differential privacy -------------------------------------------------------------------------------

def dp_round(strategy_name: str, *overrides: str, seed: int = 0):
    """One DP round from zeros: client 0's update has norm 10, client 1's norm 0.5 (clip 1 by default)."""
    rng = np.random.default_rng(2)
    big, small = rng.standard_normal(SIZE), rng.standard_normal(SIZE)
    big *= 10 / np.linalg.norm(big)
    small *= 0.5 / np.linalg.norm(small)
    strategy = build(strategy_name, 2, *overrides)
    np.random.seed(seed)  # Flower draws DP noise from numpy's global generator (sim.run.recipe seeds it)
    result = one_round(strategy, 1, {"w": np.zeros(SIZE)}, {0: {"w": big}, 1: {"w": small}})["w"]
    return strategy, big, small, result


def test_dp_fixed_clipping_clips_to_the_norm_and_adds_no_noise_at_multiplier_0():
    _, big, small, result = dp_round("dp_fixed", "strategy.noise_multiplier=0", "strategy.clipping_norm=1.0")
    np.testing.assert_allclose(result, (big / 10 + small) / 2, rtol=1e-10, atol=1e-12)  # big clipped to norm 1


def test_dp_fixed_clipping_adds_noise_of_the_configured_std():
    nm, clip, clients = 0.5, 2.0, 2
    _, big, small, result = dp_round("dp_fixed", f"strategy.noise_multiplier={nm}", f"strategy.clipping_norm={clip}")
    noise = result - (big * clip / 10 + small) / 2
    expected = nm * clip / clients  # Flower: std = noise_multiplier * clipping_norm / num_sampled_clients
    assert abs(noise.std() / expected - 1) < 0.05, (noise.std(), expected)
    assert abs(noise.mean()) < 4 * expected / math.sqrt(SIZE)


def test_dp_adaptive_clipping_clips_to_the_current_norm_then_adapts_it():
    q, lr, norm = 0.1, 0.2, 1.0  # target quantile set here (0.5 would match this round's fraction: no change)
    strategy, big, small, result = dp_round("dp_adaptive", "strategy.noise_multiplier=0",
                                            f"strategy.target_clipped_quantile={q}")
    np.testing.assert_allclose(result, (big / 10 + small) / 2, rtol=1e-10, atol=1e-12)  # no noise at 0
    clipped_fraction = 1 / 2  # the norm-10 update was clipped, the norm-0.5 one was not
    assert strategy.clipping_norm == pytest.approx(norm * math.exp(-lr * (clipped_fraction - q)))  # 0.923


def test_dp_adaptive_clipping_adds_noise_at_a_positive_multiplier():
    # 0.05 (the yaml's): Flower's default clipped_count_stddev (clients / 20) allows no more with 2 clients
    strategy, big, small, result = dp_round("dp_adaptive", "strategy.noise_multiplier=0.05")
    noise = result - (big / 10 + small) / 2
    expected = strategy.noise_multiplier * strategy.clipping_norm / 2  # with the norm after this round's update
    assert strategy.noise_multiplier > 0.05 and abs(noise.std() / expected - 1) < 0.05, (noise.std(), expected)


# --- replies that never came --------------------------------------------------------------------------

def test_a_reply_missing_at_the_timeout_counts_as_a_failure_of_its_clients():
    """Flower hands `aggregate_train` only the replies that came before `round_timeout`."""
    strategy = build("fedmedian", 3)
    instructions = list(strategy.configure_train(1, record({"w": np.zeros(4)}), ConfigRecord(), Grid(3)))
    came = instructions[:2]  # the third client straggles past the timeout
    replies = [Message(RecordDict({"arrays": record({"w": np.full(4, float(i))}),
                                   "metrics": MetricRecord({"num-examples": 10, "clients": 1, "failures": 0})}),
                       reply_to=msg) for i, msg in enumerate(came)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert strategy.observer.train == [(1, 3, 1)]  # three clients, one failure
    np.testing.assert_allclose(arrays["w"].numpy(), 0.5)  # the median of the two that came
