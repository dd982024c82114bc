"""A plain single-process FedAvg loop: the harness's correctness oracle and speed yardstick.

No Flower orchestration and no Ray: one Python loop over rounds and clients, built from
the project's own pieces, with exactly the harness's semantics:

    round 0    central evaluation of `sim.run.initial_model(cfg)` on the full test set
    round r    clients `sample_clients(N, clients_per_round, seed, r, TRAIN)` train from
               the global model through `sim.client_app.train_pack` (so with seed
               `task_seed(seed, r, cid)` and the run's client settings); the new global
               model is their example-weighted mean and train_loss the example-weighted
               mean of their losses; federated evaluation of the new model on
               `sample_clients(..., EVALUATE)` through `evaluate_pack`, example-weighted;
               central evaluation when due (round 0, every `central_eval_every`-th round
               and the last round).

It writes `history.csv` with `sim.history.HistoryWriter` and the harness's column semantics.

Two summation orders (the arithmetic is the same, the rounding is not):

* `packs=None` (the independent oracle): every client trains alone, and the mean is one
  float64 sum over all clients. The histories agree with the harness's to ~1e-7 for a
  few rounds on tiny data; on real data SGD amplifies the last-bit differences of the
  global model round after round (CIFAR-10 cross-silo: 1e-4 by round 2, 0.13 by round 5),
  so compare only short runs this way.
* `packs=k` (the harness's float order): clients are grouped as `RoundPlanner` groups
  them for k workers; each group goes through one `train_pack`/`evaluate_pack` call, as
  in a harness worker; the groups' float32 means are then combined in float32 in group
  order as Flower's `aggregate_arrayrecords` does, and metrics as
  `sim.strategy.aggregate_reply_metrics` does. Histories then match bit for bit, on any
  data and any number of rounds, unless the harness's transport or orchestration
  changes something.

Clients train with `threads` torch threads (default `resources.client_cpus`, as a harness
worker); central evaluation keeps the caller's thread count (as the harness's driver).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord
from hydra.utils import instantiate
from omegaconf import DictConfig

from sim.client_app import evaluate_pack, train_pack
from sim.client_data import ClientData
from sim.data import load_dataset
from sim.history import HistoryWriter
from sim.partition import load_or_create_partition
from sim.run import client_config, initial_model
from sim.sampling import EVALUATE, TRAIN, RoundPlanner, sample_clients
from sim.training import Normalizer, evaluate

log = logging.getLogger(__name__)
State = dict[str, torch.Tensor]


def central_due(server_round: int, central_eval_every: int, num_rounds: int) -> bool:
    """Central evaluation runs at round 0, every k-th round and the last one (k <= 0: never).

    The rule of `sim.server_app.RoundRecorder.central_due`, restated so the oracle does
    not import the code it checks.
    """
    if central_eval_every <= 0:
        return False
    return server_round % central_eval_every == 0 or server_round == num_rounds


def float64_mean(states: list[tuple[State, int]]) -> State:
    """Example-weighted mean of state dicts, summed in float64, returned as float32."""
    total = sum(n for _, n in states)
    sums: State = {}
    for state, n in states:
        for key, value in state.items():
            contribution = value.detach().double() * n
            sums[key] = sums[key] + contribution if key in sums else contribution
    return {key: (value / total).float() for key, value in sums.items()}


def flower_mean(states: list[tuple[State, int]]) -> State:
    """Weighted mean in Flower's order: float32 `array * (n / total)` added up in list order."""
    total = sum(float(n) for _, n in states)
    sums: dict[str, np.ndarray] = {}
    for state, n in states:
        share = float(n) / total
        for key, value in state.items():
            if key in sums:
                sums[key] += value.numpy() * share
            else:
                sums[key] = value.numpy() * share
    return {key: torch.from_numpy(np.asarray(value)) for key, value in sums.items()}


def weighted_metric(values: list[tuple[float, int]]) -> float | None:
    """Example-weighted mean as `aggregate_reply_metrics` computes it (None without examples)."""
    total = sum(float(n) for _, n in values)
    if total <= 0:
        return None
    result = 0.0
    for value, n in values:
        result = result + value * (float(n) / total)
    return result


class _CentralEval:
    """Loss and accuracy of a state dict on the full test set, in plain PyTorch."""

    def __init__(self, cfg: DictConfig, images: np.ndarray, labels: np.ndarray):
        self.device = torch.device(str(cfg.resources.server_device))
        self.model = instantiate(cfg.model).to(self.device)
        self.images, self.labels = images, labels
        self.normalize = Normalizer(list(cfg.dataset.mean), list(cfg.dataset.std), self.device)
        self.batch_size = int(cfg.client.eval_batch_size)

    def __call__(self, state: State) -> tuple[float, float]:
        self.model.load_state_dict(state)
        loss, acc, _ = evaluate(
            self.model, self.images, self.labels, None, self.batch_size, self.normalize, self.device
        )
        return loss, acc


class _Clients:
    """Runs client groups the way a harness worker runs one message, and times them."""

    def __init__(self, cfg: DictConfig, data: ClientData, threads: int):
        self.data, self.threads, self.base = data, threads, client_config(cfg)

    def _config(self, cids: list[int], server_round: int) -> ConfigRecord:
        config = ConfigRecord(dict(self.base))
        config.update({"server-round": server_round, "cids": cids, "client-cpus": float(self.threads)})
        return config

    def train(self, state: State, groups: list[list[int]], server_round: int) -> tuple[list, float]:
        """[(group mean, examples, train_loss)] of the groups that have examples, and seconds."""
        arrays, results, seconds = ArrayRecord(state), [], 0.0
        for group in groups:
            if sum(len(self.data.train_ids(c)) for c in group) == 0:
                continue  # a lone empty client: the harness's train_pack would fail it
            started = time.perf_counter()
            group_state, metrics = train_pack(self.data, arrays, self._config(group, server_round))
            seconds += time.perf_counter() - started
            results.append((group_state, int(metrics["num-examples"]), float(metrics["train_loss"])))
        return results, seconds

    def evaluate(self, state: State, groups: list[list[int]], server_round: int) -> tuple[list, float]:
        """[(examples, eval_loss, eval_acc)] of every group, and seconds."""
        arrays, results, seconds = ArrayRecord(state), [], 0.0
        for group in groups:
            started = time.perf_counter()
            metrics = evaluate_pack(self.data, arrays, self._config(group, server_round))
            seconds += time.perf_counter() - started
            results.append((int(metrics["num-examples"]), float(metrics["eval_loss"]), float(metrics["eval_acc"])))
        return results, seconds


def run_reference(
    cfg: DictConfig, run_dir: Path, threads: int | None = None, packs: int | None = None
) -> dict[str, Any]:
    """Run FedAvg as described in the module docstring; write `run_dir/history.csv`.

    `packs=None` is the independent oracle; `packs=k` follows the harness's summation
    order for k workers. Returns timings, one entry per history row (round 0 first):
    `train_s` (client training, summed over clients), `fed_eval_s` (federated
    evaluation, summed), `central_s` (central evaluation; 0.0 when not due), `round_s`
    (the row's round_s); plus `setup_s` (data, partition, model), `wall_s`,
    `train_threads` and `eval_threads`.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed, num_rounds, num_clients = int(cfg.seed), int(cfg.num_rounds), int(cfg.num_clients)
    eval_threads = torch.get_num_threads()
    train_threads = int(threads) if threads else max(1, int(cfg.resources.client_cpus))

    data = load_dataset(cfg.dataset, seed)
    partition = load_or_create_partition(
        data.train_labels, cfg.partition, cfg.dataset.name, int(cfg.dataset.num_classes), num_clients, seed,
    )
    clients = _Clients(cfg, ClientData.from_parts(data.train_images, data.train_labels, partition), train_threads)
    planner = RoundPlanner(
        num_clients=num_clients, clients_per_round=int(cfg.clients_per_round),
        eval_clients_per_round=int(cfg.eval_clients_per_round), seed=seed,
        train_sizes=partition.train_sizes(), val_sizes=partition.val_sizes(),
        max_packs=packs or 1, packable=bool(cfg.strategy.get("packable", False)),
    )

    def groups(server_round: int, k: int, purpose: int) -> list[list[int]]:
        if packs:
            return planner.train_packs(server_round) if purpose == TRAIN else planner.evaluate_packs(server_round)
        return [[c] for c in sample_clients(num_clients, k, seed, server_round, purpose).tolist()]

    state = {k: v.detach().clone() for k, v in initial_model(cfg).state_dict().items()}
    central = _CentralEval(cfg, data.test_images, data.test_labels)
    writer = HistoryWriter(run_dir / "history.csv")
    timings: dict[str, Any] = {"train_s": [], "fed_eval_s": [], "central_s": [], "round_s": []}
    timings["setup_s"] = time.perf_counter() - started
    try:
        run_started = last = time.perf_counter()
        for server_round in range(num_rounds + 1):
            row: dict[str, Any] = {"round": server_round}
            train_s = fed_eval_s = central_s = 0.0
            if server_round > 0:
                torch.set_num_threads(train_threads)
                train_groups = groups(server_round, int(cfg.clients_per_round), TRAIN)
                results, train_s = clients.train(state, train_groups, server_round)
                if not results:
                    raise ValueError(f"round {server_round}: clients {train_groups} have no training examples")
                weighted = [(s, n) for s, n, _ in results]
                state = flower_mean(weighted) if packs else float64_mean(weighted)
                row.update(
                    train_clients=sum(map(len, train_groups)), train_failures=0,
                    train_loss=weighted_metric([(loss, n) for _, n, loss in results]),
                )
                eval_groups = groups(server_round, int(cfg.eval_clients_per_round), EVALUATE)
                if eval_groups:
                    scores, fed_eval_s = clients.evaluate(state, eval_groups, server_round)
                    row.update(eval_clients=sum(map(len, eval_groups)), eval_failures=0)
                    row.update(fed_eval_loss=weighted_metric([(loss, n) for n, loss, _ in scores]),
                               fed_eval_acc=weighted_metric([(acc, n) for n, _, acc in scores]))
            if central_due(server_round, int(cfg.central_eval_every), num_rounds):
                torch.set_num_threads(eval_threads)
                t0 = time.perf_counter()
                row["central_loss"], row["central_acc"] = central(state)
                central_s = time.perf_counter() - t0
            now = time.perf_counter()
            row.update(round_s=round(now - last, 4), elapsed_s=round(now - run_started, 4))
            last = now
            writer.append(row)
            for key, value in (("train_s", train_s), ("fed_eval_s", fed_eval_s), ("central_s", central_s)):
                timings[key].append(value)
            timings["round_s"].append(row["round_s"])
            log.info("reference round %d: %.2f s (clients %.2f s, central %.2f s)",
                     server_round, row["round_s"], train_s + fed_eval_s, central_s)
    finally:
        torch.set_num_threads(eval_threads)
    timings.update(wall_s=time.perf_counter() - started, train_threads=train_threads, eval_threads=eval_threads)
    return timings
