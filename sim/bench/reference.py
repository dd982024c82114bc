"""A plain single-process FedAvg loop: the harness's correctness oracle and speed yardstick.

No Flower orchestration and no Ray: one Python loop over rounds and clients, built from
the project's own pieces, with exactly the harness's semantics:

    round 0    central evaluation of `sim.run.initial_model(cfg)` on the full test set
    round r    clients `sample_clients(N, clients_per_round, seed, r, TRAIN)`; each trains
               alone from the global model through `sim.client_app.train_pack` (so with
               seed `task_seed(seed, r, cid)` and the run's client settings); the new
               global model is their example-weighted mean (float64 sums, as the harness);
               train_loss is the example-weighted mean of the clients' losses;
               federated evaluation on `sample_clients(..., EVALUATE)` through
               `evaluate_pack`, example-weighted; central evaluation when due (round 0,
               every `central_eval_every`-th round and the last round).

It writes `history.csv` with `sim.history.HistoryWriter` and the harness's column
semantics, so the two histories agree up to float summation order (the harness averages
within each pack of clients, then across packs). Clients train with
`threads` torch threads (default `resources.client_cpus`, as a harness worker); central
evaluation keeps the caller's thread count (as the harness's driver).
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
from sim.sampling import EVALUATE, TRAIN, sample_clients
from sim.training import Normalizer, evaluate

log = logging.getLogger(__name__)


def central_due(server_round: int, central_eval_every: int, num_rounds: int) -> bool:
    """Central evaluation runs at round 0, every k-th round and the last one (k <= 0: never).

    The rule of `sim.server_app.RoundRecorder.central_due`, restated so the oracle does
    not import the code it checks.
    """
    if central_eval_every <= 0:
        return False
    return server_round % central_eval_every == 0 or server_round == num_rounds


def _task_config(base: ConfigRecord, cids: list[int], server_round: int, threads: int) -> ConfigRecord:
    """The message config a harness client would get: the run's settings plus round and ids."""
    config = ConfigRecord(dict(base))
    config["server-round"] = server_round
    config["cids"] = cids
    config["client-cpus"] = float(threads)
    return config


def _weighted_mean(states: list[tuple[dict[str, torch.Tensor], int]]) -> dict[str, torch.Tensor]:
    """Example-weighted mean of state dicts, summed in float64, returned as float32."""
    total = sum(n for _, n in states)
    sums: dict[str, torch.Tensor] = {}
    for state, n in states:
        for key, value in state.items():
            contribution = value.detach().double() * n
            sums[key] = sums[key] + contribution if key in sums else contribution
    return {key: (value / total).float() for key, value in sums.items()}


class _CentralEval:
    """Loss and accuracy of a state dict on the full test set, in plain PyTorch."""

    def __init__(self, cfg: DictConfig, images: np.ndarray, labels: np.ndarray):
        self.model = instantiate(cfg.model)
        self.images, self.labels = images, labels
        self.device = torch.device(str(cfg.resources.server_device))
        self.model.to(self.device)
        self.normalize = Normalizer(list(cfg.dataset.mean), list(cfg.dataset.std), self.device)
        self.batch_size = int(cfg.client.eval_batch_size)

    def __call__(self, state: dict[str, torch.Tensor]) -> tuple[float, float]:
        self.model.load_state_dict(state)
        loss, acc, _ = evaluate(
            self.model, self.images, self.labels, None, self.batch_size, self.normalize, self.device
        )
        return loss, acc


def run_reference(cfg: DictConfig, run_dir: Path, threads: int | None = None) -> dict[str, Any]:
    """Run FedAvg as described in the module docstring; write `run_dir/history.csv`.

    Returns timings, one entry per history row (round 0 first): `train_s` (client
    training, summed over clients), `fed_eval_s` (federated evaluation, summed),
    `central_s` (central evaluation; 0.0 when not due), `round_s` (the row's round_s),
    plus `setup_s` (data, partition, model), `wall_s`, `train_threads`, `eval_threads`.
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
    clients = ClientData.from_parts(data.train_images, data.train_labels, partition)
    state = {k: v.detach().clone() for k, v in initial_model(cfg).state_dict().items()}
    central = _CentralEval(cfg, data.test_images, data.test_labels)
    base = client_config(cfg)
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
                arrays = ArrayRecord(state)
                # training: every sampled client alone from the global model
                ids = sample_clients(num_clients, int(cfg.clients_per_round), seed, server_round, TRAIN)
                results, loss_sum = [], 0.0
                for cid in ids.tolist():
                    if len(clients.train_ids(cid)) == 0:
                        continue  # train_pack skips a client without training examples too
                    t0 = time.perf_counter()
                    config = _task_config(base, [cid], server_round, train_threads)
                    client_state, metrics = train_pack(clients, arrays, config)
                    train_s += time.perf_counter() - t0
                    n = int(metrics["num-examples"])
                    results.append((client_state, n))
                    loss_sum += float(metrics["train_loss"]) * n
                if not results:
                    raise ValueError(f"round {server_round}: clients {ids.tolist()} have no training examples")
                state = _weighted_mean(results)
                total = sum(n for _, n in results)
                row.update(train_clients=len(ids), train_failures=0, train_loss=loss_sum / total)
                # federated evaluation of the new global model
                ids = sample_clients(num_clients, int(cfg.eval_clients_per_round), seed, server_round, EVALUATE)
                if len(ids):
                    arrays = ArrayRecord(state)
                    n_sum, loss_sum, correct = 0, 0.0, 0.0
                    for cid in ids.tolist():
                        t0 = time.perf_counter()
                        config = _task_config(base, [cid], server_round, train_threads)
                        metrics = evaluate_pack(clients, arrays, config)
                        fed_eval_s += time.perf_counter() - t0
                        n = int(metrics["num-examples"])
                        n_sum += n
                        loss_sum += float(metrics["eval_loss"]) * n
                        correct += float(metrics["eval_acc"]) * n
                    row.update(eval_clients=len(ids), eval_failures=0)
                    if n_sum > 0:
                        row.update(fed_eval_loss=loss_sum / n_sum, fed_eval_acc=correct / n_sum)
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
            log.info(
                "reference round %d: %.2f s (train %.2f s, central %.2f s)",
                server_round, row["round_s"], train_s, central_s,
            )
    finally:
        torch.set_num_threads(eval_threads)
    timings.update(wall_s=time.perf_counter() - started, train_threads=train_threads, eval_threads=eval_threads)
    return timings
