"""The reference's packs in parallel: one plain process per harness worker, no Flower, no Ray.

`sim.bench.reference` times every pack alone, one after the other, and its ideal bound
divides that time by the workers. Two trainings at once on one machine may each run
slower than one alone (shared caches and memory bandwidth: ResNet-18 here), and then no
implementation reaches that bound. `PackPool` measures what plain processes reach: each
round's packs go to `workers`
spawned processes at once, each with the data (the same cache files), the run's client
settings and `threads` torch threads, and run `train_pack` / `evaluate_pack` exactly as a
harness worker does. The parent collects the replies in pack order, so the history is
the same bit for bit; only the time differs.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord
from omegaconf import DictConfig

_worker: dict[str, Any] = {}  # in each pool process: its data and settings


def _start_worker(cfg: DictConfig, threads: int) -> None:
    """Pool initializer: load the data and the partition from their caches, as a Ray worker would."""
    from sim.data import load_dataset
    from sim.federation.client_data import ClientData
    from sim.federation.client_settings import ClientSettings
    from sim.partition.manifest import load_or_create_partition

    torch.set_num_threads(threads)
    seed = int(cfg.seed)
    data = load_dataset(cfg.dataset, seed)
    partition = load_or_create_partition(
        data.train_labels, cfg.partition, cfg.dataset.name, int(cfg.dataset.num_classes), int(cfg.num_clients), seed,
    )
    _worker["data"] = ClientData.from_parts(data.train_images, data.train_labels, partition)
    _worker["settings"] = replace(ClientSettings.from_config(cfg), client_cpus=float(threads))


def _run_pack(task_name: str, state: dict[str, torch.Tensor], group: list[int], server_round: int):
    """One pack in a pool process: (train_pack's or evaluate_pack's result, seconds it took)."""
    from sim.federation import client_app

    started = time.perf_counter()
    task = getattr(client_app, task_name)
    config = ConfigRecord({"server-round": server_round, "cids": group})
    result = task(_worker["data"], ArrayRecord(state), config, _worker["settings"])
    return result, time.perf_counter() - started


class PackPool:
    """`workers` spawned processes that run a round's packs at once."""

    def __init__(self, cfg: DictConfig, workers: int, threads: int):
        context = multiprocessing.get_context("spawn")  # no fork of a process that already runs torch threads
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                            initializer=_start_worker, initargs=(cfg, threads))

    def run(self, task_name: str, state: dict[str, torch.Tensor], groups: list[list[int]], server_round: int):
        """Submit every group at once; yield, in group order, (result or the exception it raised, seconds)."""
        futures = [self.executor.submit(_run_pack, task_name, state, group, server_round) for group in groups]
        for future in futures:
            error = future.exception()
            yield (error, 0.0) if error is not None else future.result()

    def close(self) -> None:
        """Stop the processes."""
        self.executor.shutdown(wait=True, cancel_futures=True)
