"""Privacy accounting: epsilon per round from Flower's accountant, the budget stop, the preconditions."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from helpers.strategies import Observer
from sim.errors import RunStopped
from sim.federation.privacy import AccountedDPClientSideFixedClipping, AccountedDPServerSideFixedClipping
from sim.federation.sampling import RoundPlanner
from sim.federation.strategy import FedAvg

CLIENTS, PER_ROUND, SIGMA, DELTA = 20, 4, 1.1, 1e-5


pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py


class Grid:
    def get_node_ids(self):
        return list(range(1, PER_ROUND + 1))


def build(cls, weighted_by_key="clients", **kwargs):
    sizes = np.full(CLIENTS, 10)
    planner = RoundPlanner(num_clients=CLIENTS, clients_per_round=PER_ROUND, eval_clients_per_round=0, seed=0,
                           train_sizes=sizes, val_sizes=sizes, max_packs=PER_ROUND, packable=False)

    def inner(**run_time):
        return FedAvg(weighted_by_key=weighted_by_key, **run_time)

    return cls(strategy=inner, planner=planner, observer=Observer(), noise_multiplier=SIGMA, clipping_norm=1.0,
               num_sampled_clients=PER_ROUND, target_delta=DELTA, **kwargs)


def one_round(strategy, server_round: int) -> None:
    arrays = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord({}), Grid()))
    replies = []
    for m in messages:
        content = RecordDict({"arrays": ArrayRecord({"w": Array(np.full(3, 0.1, dtype=np.float32))}),
                              "metrics": MetricRecord({"num-examples": 10, "clients": 1, "failures": 0})})
        replies.append(Message(content, reply_to=m))
    strategy.aggregate_train(server_round, replies)


@pytest.mark.parametrize("cls", [AccountedDPServerSideFixedClipping, AccountedDPClientSideFixedClipping])
def test_epsilon_per_round_is_the_rdp_composition_of_the_rounds(cls):
    from dp_accounting import dp_event, rdp

    strategy = build(cls)
    for r in range(1, 4):
        one_round(strategy, r)
    reference = rdp.RdpAccountant()  # dp-accounting directly: r Gaussian releases, no sampling amplification
    expected = []
    for _ in range(3):
        reference.compose(dp_event.GaussianDpEvent(SIGMA))
        expected.append(reference.get_epsilon(DELTA))
    got = [row["epsilon"] for row in strategy.strategy.observer.extra]
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert got[0] < got[1] < got[2]


def test_the_run_stops_before_a_round_would_exceed_max_epsilon():
    strategy = build(AccountedDPServerSideFixedClipping, max_epsilon=5.0)
    one_round(strategy, 1)  # epsilon about 4.3
    with pytest.raises(RunStopped, match=r"max_epsilon=5.0 .*after round 1"):
        one_round(strategy, 2)


def test_a_restored_ledger_continues_the_account():
    first = build(AccountedDPServerSideFixedClipping)
    one_round(first, 1)
    one_round(first, 2)
    resumed = build(AccountedDPServerSideFixedClipping)
    resumed.privacy_ledger = first.privacy_ledger  # what a checkpoint restores
    resumed.prepare_run(None)
    one_round(resumed, 3)
    one_round(first, 3)
    assert resumed.strategy.observer.extra[-1]["epsilon"] == first.strategy.observer.extra[-1]["epsilon"]


def test_accounting_refuses_example_weighted_aggregation():
    with pytest.raises(ValueError, match="weighted_by_key=clients"):
        build(AccountedDPServerSideFixedClipping, weighted_by_key="num-examples")
