"""A plain single-process FedAvg loop: the harness's correctness oracle and speed yardstick.

No Flower orchestration and no Ray: one Python loop over rounds and clients, built from
the project's own pieces, with exactly the harness's semantics:

    round 0    central evaluation of `sim.run.recipe.initial_model(cfg)` on the full test set
    round r    clients `sample_clients(N, clients_per_round, seed, r, TRAIN)` train from
               the global model through `sim.federation.client_app.train_pack` (so with seed
               `task_seed(seed, r, cid)` and the run's client settings); the new global
               model is their example-weighted mean and train_loss the example-weighted
               mean of their losses; federated evaluation of the new model on
               `sample_clients(..., EVALUATE)` through `evaluate_pack`, example-weighted;
               central evaluation when due (round 0, every `central_eval_every`-th round
               and the last round).
    faults     `client.failure_rate` faults come from train_pack/evaluate_pack themselves
               (seeded per client, round and task), so both runs lose the same clients:
               failed clients are counted and left out of the means; a round where fewer
               than `min_train_nodes` (default 1) clients succeed keeps the model; the run
               stops after `max_failed_rounds` rounds in a row where every client failed.
               Stragglers sleep as in the harness, but no `round_timeout` is applied.

Only `strategy=fedavg` is implemented. It writes `history.csv` with
`sim.run.history.HistoryWriter` and the harness's column semantics.

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
  `sim.federation.strategy.aggregate_reply_metrics` does. Histories then match bit for bit, on any
  data and any number of rounds, unless the harness's transport or orchestration
  changes something.

Clients train with `threads` torch threads (default `resources.client_cpus`, as a harness
worker); central evaluation keeps the caller's thread count (as the harness's driver).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord
from hydra.utils import instantiate
from omegaconf import DictConfig

from sim.federation.client_app import ClientFailure, evaluate_pack, train_pack
from sim.federation.client_data import ClientData
from sim.federation.client_settings import ClientSettings
from sim.data import load_dataset
from sim.errors import RunAborted
from sim.run.history import HistoryWriter
from sim.partition.manifest import load_or_create_partition
from sim.run.recipe import initial_model
from sim.federation.sampling import EVALUATE, TRAIN, RoundPlanner, sample_clients
from sim.federation.training import Normalizer, evaluate
from sim.bench.pack_pool import PackPool

log = logging.getLogger(__name__)
State = dict[str, torch.Tensor]


def central_due(server_round: int, central_eval_every: int, num_rounds: int) -> bool:
    """Central evaluation runs at round 0, every k-th round and the last one (k <= 0: never).

    The rule of `sim.federation.server_app.RoundRecorder.central_due`, restated so the oracle does
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


def _mean_of(replies: list, key: str) -> float | None:
    """Example-weighted mean of one metric over the groups' replies."""
    return weighted_metric([(float(m[key]), int(m["num-examples"])) for _, m in replies])


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


@dataclass
class _Outcome:
    """What one round's groups of clients returned."""

    clients: int = 0  # clients asked
    failures: int = 0  # clients that failed (simulated faults; a whole group when its task raised)
    replies: list = field(default_factory=list)  # per successful group: (state or None, metrics)
    seconds: float = 0.0  # wall time of the tasks
    slowest: float = 0.0  # wall time of the slowest group (a harness pack: one worker's share of the round)
    cpu_seconds: float = 0.0  # this process's CPU time during them (< seconds on a busy machine)


class _Clients:
    """Runs groups of clients the way a harness worker runs one message, and times them.

    A task that raises `ClientFailure` (every client of the group hit a simulated fault)
    fails the whole group, as the harness's error reply does. So does the ValueError of a
    group without training examples when `whole_groups` (the harness's order); with one
    client per group such a client is skipped instead, as a harness pack skips it.
    With a `PackPool`, a round's groups run at once in its processes; otherwise one after
    the other in this one.
    """

    def __init__(self, cfg: DictConfig, data: ClientData, threads: int, whole_groups: bool,
                 pool: PackPool | None = None):
        self.data = data
        self.settings = replace(ClientSettings.from_config(cfg), client_cpus=float(threads))
        self.whole_groups = whole_groups
        self.train_sizes = np.diff(data.train_offsets)
        self.pool = pool

    def _one(self, task, arrays: ArrayRecord, group: list[int], server_round: int, outcome: _Outcome):
        """(task's result or the exception it raised, seconds) for one group, in this process."""
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            result = task(self.data, arrays, ConfigRecord({"server-round": server_round, "cids": group}), self.settings)
        except (ClientFailure, ValueError) as error:
            result = error
        outcome.cpu_seconds += time.process_time() - cpu_started
        return result, time.perf_counter() - started

    def run(self, task, state: State, groups: list[list[int]], server_round: int) -> _Outcome:
        """Call `task` (train_pack or evaluate_pack) once per group from the global `state`."""
        arrays, outcome = ArrayRecord(state), _Outcome()
        started = time.perf_counter()
        if self.pool is not None:
            results = self.pool.run(task.__name__, state, groups, server_round)
        else:
            results = (self._one(task, arrays, group, server_round, outcome) for group in groups)
        for group, (result, seconds) in zip(groups, results):
            outcome.clients += len(group)
            outcome.seconds += seconds
            outcome.slowest = max(outcome.slowest, seconds)
            if isinstance(result, ClientFailure):
                outcome.failures += len(group)
                continue
            if isinstance(result, ValueError):
                if self.train_sizes[group].sum() > 0:
                    raise result  # not the empty-group error
                outcome.failures += len(group) if self.whole_groups else 0
                continue
            if isinstance(result, BaseException):
                raise result
            group_state, metrics = result if isinstance(result, tuple) else (None, result)
            outcome.failures += int(metrics["failures"])
            outcome.replies.append((group_state, metrics))
        if self.pool is not None:
            outcome.seconds = time.perf_counter() - started  # the groups ran at once: the round waited this long
        return outcome


def run_reference(
    cfg: DictConfig, run_dir: Path, threads: int | None = None, packs: int | None = None, parallel: bool = False,
) -> dict[str, Any]:
    """Run FedAvg as described in the module docstring; write `run_dir/history.csv`.

    `packs=None` is the independent oracle; `packs=k` follows the harness's summation
    order for k workers, and `parallel=True` with it runs each round's packs at once in k
    processes (`sim.bench.pack_pool`: the same history, a round as fast as plain
    processes on this machine can make it). Returns timings, one entry per history row (round 0 first):
    `train_s` (client training, summed over clients), `train_cpu_s` (this process's CPU
    time during it: with one thread, train_cpu_s / train_s below 1 means other work took
    the CPU), `fed_eval_s` (federated
    evaluation, summed), `central_s` (central evaluation; 0.0 when not due), `round_s`
    (the row's round_s), `train_slowest_s` and `fed_eval_slowest_s` (the slowest group's
    time: with `packs=k`, the harness pack a worker waits on longest); plus `setup_s` (data, partition, model), `wall_s`,
    `train_threads` and `eval_threads`.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if str(cfg.strategy._target_) != "sim.federation.strategy.FedAvg":
        raise ValueError(f"the reference implements FedAvg only, not strategy={cfg.strategy._target_}")
    seed, num_rounds, num_clients = int(cfg.seed), int(cfg.num_rounds), int(cfg.num_clients)
    max_failed_rounds = int(cfg.get("max_failed_rounds", 0))
    min_train = max(1, int(cfg.strategy.get("min_train_nodes", 1)))  # as sim.federation.strategy.VirtualClients
    eval_threads = torch.get_num_threads()
    train_threads = int(threads) if threads else max(1, int(cfg.resources.client_cpus))

    data = load_dataset(cfg.dataset, seed)
    partition = load_or_create_partition(
        data.train_labels, cfg.partition, cfg.dataset.name, int(cfg.dataset.num_classes), num_clients, seed,
    )
    client_data = ClientData.from_parts(data.train_images, data.train_labels, partition)
    pool = PackPool(cfg, packs, train_threads) if parallel and packs else None
    clients = _Clients(cfg, client_data, train_threads, whole_groups=bool(packs), pool=pool)
    planner = RoundPlanner(
        num_clients=num_clients, clients_per_round=int(cfg.clients_per_round),
        eval_clients_per_round=int(cfg.eval_clients_per_round), seed=seed,
        train_sizes=partition.train_sizes(), val_sizes=partition.val_sizes(),
        max_packs=packs or 1, packable=bool(cfg.strategy.get("packable", False)),
    )

    def groups(server_round: int, purpose: int) -> list[list[int]]:
        """The round's clients: the harness's packs, or one group per client."""
        if packs:
            return planner.train_packs(server_round) if purpose == TRAIN else planner.evaluate_packs(server_round)
        k = int(cfg.clients_per_round) if purpose == TRAIN else int(cfg.eval_clients_per_round)
        return [[c] for c in sample_clients(num_clients, k, seed, server_round, purpose).tolist()]

    state = {k: v.detach().clone() for k, v in initial_model(cfg).state_dict().items()}
    central = _CentralEval(cfg, data.test_images, data.test_labels)
    writer = HistoryWriter(run_dir / "history.csv")
    timings: dict[str, Any] = {"train_s": [], "train_cpu_s": [], "fed_eval_s": [], "central_s": [], "round_s": [],
                               "train_slowest_s": [], "fed_eval_slowest_s": []}
    timings["setup_s"] = time.perf_counter() - started
    try:
        run_started = last = time.perf_counter()
        failed_streak = 0
        for server_round in range(num_rounds + 1):
            row: dict[str, Any] = {"round": server_round}
            train_s = train_cpu_s = fed_eval_s = central_s = train_slowest_s = fed_eval_slowest_s = 0.0
            if server_round > 0:
                torch.set_num_threads(train_threads)
                trained = clients.run(train_pack, state, groups(server_round, TRAIN), server_round)
                train_s, train_cpu_s, train_slowest_s = trained.seconds, trained.cpu_seconds, trained.slowest
                row.update(train_clients=trained.clients, train_failures=trained.failures)
                if trained.clients - trained.failures >= min_train and trained.replies:  # else the model stays
                    weighted = [(s, int(m["num-examples"])) for s, m in trained.replies]
                    state = flower_mean(weighted) if packs else float64_mean(weighted)
                    row["train_loss"] = _mean_of(trained.replies, "train_loss")
                failed_streak = failed_streak + 1 if trained.failures == trained.clients else 0
                eval_groups = groups(server_round, EVALUATE)
                if eval_groups:
                    scored = clients.run(evaluate_pack, state, eval_groups, server_round)
                    fed_eval_s, fed_eval_slowest_s = scored.seconds, scored.slowest
                    row.update(eval_clients=scored.clients, eval_failures=scored.failures)
                    if scored.replies:
                        row.update(fed_eval_loss=_mean_of(scored.replies, "eval_loss"),
                                   fed_eval_acc=_mean_of(scored.replies, "eval_acc"))
            if central_due(server_round, int(cfg.central_eval_every), num_rounds):
                torch.set_num_threads(eval_threads)
                t0 = time.perf_counter()
                row["central_loss"], row["central_acc"] = central(state)
                central_s = time.perf_counter() - t0
            now = time.perf_counter()
            row.update(round_s=round(now - last, 4), elapsed_s=round(now - run_started, 4))
            last = now
            writer.append(row)
            for key, value in (("train_s", train_s), ("train_cpu_s", train_cpu_s),
                               ("fed_eval_s", fed_eval_s), ("central_s", central_s),
                               ("train_slowest_s", train_slowest_s), ("fed_eval_slowest_s", fed_eval_slowest_s)):
                timings[key].append(value)
            timings["round_s"].append(row["round_s"])
            log.info("reference round %d: %.2f s (clients %.2f s, central %.2f s)",
                     server_round, row["round_s"], train_s + fed_eval_s, central_s)
            if 0 < max_failed_rounds <= failed_streak:
                raise RunAborted(f"every client failed in {failed_streak} consecutive rounds (reference)")
    finally:
        torch.set_num_threads(eval_threads)
        if pool is not None:
            pool.close()
    timings.update(wall_s=time.perf_counter() - started, train_threads=train_threads, eval_threads=eval_threads)
    return timings
