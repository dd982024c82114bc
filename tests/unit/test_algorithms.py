"""Each algorithm against the property its paper claims, on exactly solvable problems.

The rounds run in-process without Ray but through the real code of a run: the strategy's
`configure_train` / `aggregate_train` (sampling, packing, client state, server update)
and the client's `train_reply` with the algorithm's rule. Only the task differs: heterogeneous
linear-regression clients with full-batch gradient steps, whose global optimum (the
example-weighted least-squares solution) is known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from torch import nn

from helpers.strategies import Observer
from sim.algorithms.base import Algorithm
from sim.algorithms.ditto import Ditto
from sim.algorithms.feddyn import FedDyn
from sim.algorithms.fednova import FedNova
from sim.algorithms.fedper import FedPer
from sim.algorithms.rule import LocalTask, evaluate_reply, train_reply
from sim.algorithms.scaffold import Scaffold
from sim.federation.sampling import RoundPlanner

DIM = 3


pytestmark = pytest.mark.usefixtures("task_identity")  # tests/conftest.py


class Grid:
    """The one thing the strategies ask of Flower's grid: the supernode ids."""

    def __init__(self, nodes: int):
        self.nodes = list(range(1, nodes + 1))

    def get_node_ids(self):
        return self.nodes


class Client:
    """A linear-regression client: y = X·w_true + noise; full-batch steps on 0.5·mean squared error."""

    def __init__(self, rng, n: int, scale: np.ndarray, w_true: np.ndarray, steps: int, noise: float = 0.1):
        def draw(m):
            x = rng.normal(size=(m, DIM)) * scale
            return x, x @ w_true + noise * rng.normal(size=m)

        self.x, self.y = (torch.from_numpy(a) for a in draw(n))
        self.x_val, self.y_val = (torch.from_numpy(a) for a in draw(n))
        self.steps = steps

    def task(self) -> LocalTask:
        def loss(model, batch, x=self.x, y=self.y):
            return 0.5 * (model(x).squeeze(-1) - y).pow(2).mean()

        def evaluate(model):
            with torch.no_grad():
                value = float(0.5 * (model(self.x_val).squeeze(-1) - self.y_val).pow(2).mean())
            return value, 0.0, len(self.y_val)

        return LocalTask(len(self.y), batches=lambda: iter([None] * self.steps), loss=loss, evaluate=evaluate)


def make_clients(steps: list[int], seed: int = 0, shared_w: bool = False) -> list[Client]:
    rng = np.random.default_rng(seed)
    clients = []
    for i, k in enumerate(steps):
        scale = np.array([1.0, 0.5, 1.5]) * (0.6 + 0.4 * i)  # different curvatures: drift under local steps
        w_true = np.ones(DIM) if shared_w else rng.normal(size=DIM) * 2
        clients.append(Client(rng, 30 + 10 * i, scale, w_true, k))
    return clients


def optimum(clients: list[Client]) -> np.ndarray:
    """The example-weighted least-squares solution over every client's data."""
    x = torch.cat([c.x for c in clients]).numpy()
    y = torch.cat([c.y for c in clients]).numpy()
    return np.linalg.lstsq(x, y, rcond=None)[0]


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(DIM, 1, bias=False).double()


def run_rounds(strategy_cls, clients, rounds, model=None, lr=0.05, evaluate=False, tmp_path=None, **kwargs):
    """`rounds` rounds of `strategy_cls` over `clients` (all sampled, two packs); the final model and strategy."""
    model = model or linear_model()
    n = len(clients)
    sizes = np.array([len(c.y) for c in clients])
    planner = RoundPlanner(num_clients=n, clients_per_round=n, eval_clients_per_round=n if evaluate else 0, seed=0,
                           train_sizes=sizes, val_sizes=sizes, max_packs=2, packable=True)
    strategy = strategy_cls(planner=planner, observer=Observer(), **kwargs)
    if isinstance(strategy, Algorithm):
        strategy.prepare_run(tmp_path)
    grid, arrays = Grid(n), ArrayRecord(model.state_dict())
    config = {"lr": lr, "momentum": 0.0, "weight-decay": 0.0, "seed": 0}
    tasks = {i: c.task() for i, c in enumerate(clients)}
    personal = None
    for r in range(1, rounds + 1):
        messages = strategy.configure_train(r, arrays, ConfigRecord(dict(config)), grid)
        replies = [Message(train_reply(m.content, model, tasks.get), reply_to=m) for m in messages]
        arrays, _ = strategy.aggregate_train(r, replies)
        if evaluate and r == rounds:
            messages = strategy.configure_evaluate(r, arrays, ConfigRecord(dict(config)), grid)
            replies = [Message(RecordDict({"metrics": evaluate_reply(m.content, model, tasks.get)}), reply_to=m)
                       for m in messages]
            personal = strategy.aggregate_evaluate(r, replies)
    weights = np.concatenate([v.numpy().ravel() for v in arrays.values()])
    return weights, strategy, personal


def fedavg(**kwargs):
    return Algorithm(**kwargs)  # the base rule is plain local SGD: FedAvg through the same code path


def test_fedavg_is_biased_and_scaffold_feddyn_reach_the_optimum(tmp_path):
    clients = make_clients([5, 5, 5])  # equal local steps, different curvatures and optima
    best = optimum(clients)
    w_avg, _, _ = run_rounds(fedavg, clients, 40, lr=0.1, tmp_path=tmp_path / "a")
    w_scaffold, scaffold, _ = run_rounds(Scaffold, clients, 40, lr=0.1, tmp_path=tmp_path / "s")
    w_dyn, dyn, _ = run_rounds(FedDyn, clients, 30, lr=0.1, tmp_path=tmp_path / "d", alpha=0.5)
    assert np.linalg.norm(w_avg - best) > 0.1  # client drift: FedAvg settles away from the optimum
    assert np.linalg.norm(w_scaffold - best) < 0.01  # |w*| = 2.6
    assert np.linalg.norm(w_dyn - best) < 0.01
    assert len(scaffold.client_states) == len(clients)  # one control variate per client, kept across rounds
    assert scaffold.observer.extra[-1]["control_norm"] > 0 and dyn.observer.extra[-1]["dyn_norm"] > 0


def same_curvature_clients(steps: list[int]) -> list[Client]:
    """Clients sharing one design (so one Hessian, the identity) with different optima.

    Equal local steps would leave FedAvg unbiased here; unequal ones alone bias it.
    """
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(30, DIM)))
    x = torch.from_numpy(q * np.sqrt(30))  # xᵀx / n = I
    clients = []
    for k in steps:
        client = Client(rng, 30, np.ones(DIM), rng.normal(size=DIM) * 2, k, noise=0.0)
        client.x = client.x_val = x
        client.y = client.y_val = x @ torch.from_numpy(rng.normal(size=DIM) * 2)
        clients.append(client)
    return clients


def test_fednova_removes_the_bias_of_unequal_local_steps(tmp_path):
    clients = same_curvature_clients([1, 2, 10])
    best = optimum(clients)
    w_avg, _, _ = run_rounds(fedavg, clients, 60, lr=0.02, tmp_path=tmp_path / "a")
    w_nova, nova, _ = run_rounds(FedNova, clients, 20, lr=0.02, tmp_path=tmp_path / "n", server_learning_rate=6.0)
    err_avg, err_nova = np.linalg.norm(w_avg - best), np.linalg.norm(w_nova - best)
    assert err_avg > 0.5, err_avg  # FedAvg weights clients by their steps: it converges elsewhere
    assert err_nova < 0.1 * err_avg, (err_nova, err_avg)  # what is left is FedNova's O(lr) term
    assert nova.observer.extra[-1]["tau_eff"] == pytest.approx(13 / 3)  # equal sizes: the mean of 1, 2, 10


def pathological_clients() -> list[Client]:
    """Clients whose targets conflict (w_true of opposite signs): no single model fits them all."""
    rng = np.random.default_rng(1)
    base = np.array([1.0, -2.0, 0.5])
    return [Client(rng, 40, np.ones(DIM), sign * base, 5, noise=0.05) for sign in (1.0, -1.0, 2.0, -0.5)]


@pytest.mark.parametrize("algorithm", ["ditto", "fedper"])
def test_personalised_models_beat_the_global_one_on_their_own_data(tmp_path, algorithm):
    clients = pathological_clients()
    if algorithm == "ditto":
        _, strategy, metrics = run_rounds(Ditto, clients, 40, lr=0.1, evaluate=True, tmp_path=tmp_path, ditto_lambda=0.01)
    else:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(DIM, 1, bias=False), nn.Linear(1, 1, bias=False)).double()
        _, strategy, metrics = run_rounds(FedPer, clients, 40, model=model, lr=0.1, evaluate=True, tmp_path=tmp_path,
                                          personal_layers=["1"])
    assert metrics["personal_eval_loss"] < 0.1 * metrics["eval_loss"], dict(metrics)
    assert strategy.observer.extra[-1]["personal_eval_loss"] == pytest.approx(metrics["personal_eval_loss"])


def test_a_client_that_fails_keeps_its_previous_state(tmp_path):
    clients = make_clients([3, 3, 3])
    sizes = np.array([len(c.y) for c in clients])
    planner = RoundPlanner(num_clients=3, clients_per_round=3, eval_clients_per_round=0, seed=0,
                           train_sizes=sizes, val_sizes=sizes, max_packs=1, packable=True)  # one pack of three
    strategy = Scaffold(planner=planner, observer=Observer())
    strategy.prepare_run(tmp_path)
    model, tasks = linear_model(), {i: c.task() for i, c in enumerate(clients)}
    arrays, config = ArrayRecord(model.state_dict()), {"lr": 0.05, "seed": 0}
    history = []
    for r, down in ((1, set()), (2, {1})):
        messages = strategy.configure_train(r, arrays, ConfigRecord(dict(config)), Grid(3))
        replies = [Message(train_reply(m.content, model, tasks.get, failed=lambda cid: cid in down), reply_to=m)
                   for m in messages]
        arrays, _ = strategy.aggregate_train(r, replies)
        history.append({cid: strategy.client_states.get(cid)["weight"].numpy() for cid in range(3)})
    np.testing.assert_array_equal(history[1][1], history[0][1])  # client 1 failed in round 2: state kept
    for cid in (0, 2):
        assert not np.array_equal(history[1][cid], history[0][cid])
