"""One simulation run, as a short recipe: config in, history and summary out.

    1. data       load (or decode once and cache) the data set
    2. partition  split the train set across clients, reusing a saved manifest
    3. model      the initial global model, seeded
    4. ray        start or attach to Ray; put the arrays in its object store once
    5. strategy   the configured Flower strategy with the harness's client sampling
    6. simulate   Flower's simulation engine runs the ServerApp and ClientApps
    7. save       summary.json and curves.png beside history.csv
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import torch
from flwr.app import ArrayRecord, ConfigRecord
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sim.client_app import build_client_app
from sim.client_data import ClientData, DataHandle
from sim.console import RoundProgress, quiet_libraries
from sim.data import load_dataset
from sim.history import HistoryWriter, plot_curves, summarize, write_json_atomic
from sim.partition import load_or_create_partition
from sim.ray_runtime import client_resources, concurrency, ray_session
from sim.sampling import RoundPlanner, num_supernodes
from sim.server_app import CentralEvaluator, RoundRecorder, build_server_app

log = logging.getLogger(__name__)


def client_config(cfg: DictConfig) -> ConfigRecord:
    """Everything a client task needs to know, sent with every message."""
    return ConfigRecord(
        {
            "seed": int(cfg.seed),
            "epochs": int(cfg.client.epochs),
            "batch-size": int(cfg.client.batch_size),
            "lr": float(cfg.client.lr),
            "momentum": float(cfg.client.momentum),
            "weight-decay": float(cfg.client.weight_decay),
            "eval-batch-size": int(cfg.client.eval_batch_size),
            "mean": [float(v) for v in cfg.dataset.mean],
            "std": [float(v) for v in cfg.dataset.std],
            "model-target": str(cfg.model._target_),
            "in-channels": int(cfg.model.in_channels),
            "image-size": int(cfg.model.image_size),
            "num-classes": int(cfg.model.num_classes),
            "client-cpus": float(cfg.resources.client_cpus),
            "use-gpu": float(cfg.resources.client_gpus) > 0,
        }
    )


def initial_model(cfg: DictConfig) -> torch.nn.Module:
    """The global model before round 1, its weights drawn from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed))
        return instantiate(cfg.model)


def run(cfg: DictConfig, run_dir: Path) -> float | None:
    """Run one simulation into `run_dir`; return the final central accuracy (or None)."""
    from flwr.simulation import run_simulation

    quiet_libraries(cfg.verbose)
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("run directory: %s", run_dir)

    # 1. data
    data = load_dataset(cfg.dataset, int(cfg.seed))
    # 2. partition
    partition = load_or_create_partition(
        data.train_labels, cfg.partition, cfg.dataset.name, int(cfg.dataset.num_classes),
        int(cfg.num_clients), int(cfg.seed),
    )
    # 3. model
    model = initial_model(cfg)
    central = None
    if cfg.central_eval_every > 0:
        central = CentralEvaluator(
            lambda: instantiate(cfg.model), data.test_images, data.test_labels,
            list(cfg.dataset.mean), list(cfg.dataset.std), int(cfg.client.eval_batch_size),
            device=str(cfg.resources.server_device),
        )
    history_path = run_dir / "history.csv"
    with RoundProgress(int(cfg.num_rounds)) as progress:
        recorder = RoundRecorder(
            HistoryWriter(history_path), central, int(cfg.central_eval_every),
            int(cfg.num_rounds), on_round=progress.update,
        )
        # 4. ray
        with ray_session(cfg.resources, cfg.verbose):
            handle = DataHandle.share(ClientData.from_parts(data.train_images, data.train_labels, partition))
            workers = concurrency(cfg.resources)
            log.info("clients running at once: %d", workers)
            # 5. strategy
            packable = bool(cfg.strategy.get("packable", False))
            planner = RoundPlanner(
                num_clients=int(cfg.num_clients), clients_per_round=int(cfg.clients_per_round),
                eval_clients_per_round=int(cfg.eval_clients_per_round), seed=int(cfg.seed),
                train_sizes=partition.train_sizes(), val_sizes=partition.val_sizes(),
                max_packs=workers, packable=packable,
            )
            strategy = instantiate(cfg.strategy, _partial_=True)(planner=planner, observer=recorder)
            server_app = build_server_app(
                strategy, ArrayRecord(model.state_dict()), recorder, int(cfg.num_rounds),
                client_config(cfg), client_config(cfg), float(cfg.round_timeout),
            )
            # 6. simulate
            run_simulation(
                server_app=server_app,
                client_app=build_client_app(handle),
                num_supernodes=num_supernodes(
                    int(cfg.clients_per_round), int(cfg.eval_clients_per_round), workers, packable
                ),
                backend_config={"client_resources": client_resources(cfg.resources)},
            )
    # 7. save
    history = pd.read_csv(history_path)
    manifest = str(partition.path) if partition.path else None
    summary = summarize(history, time.perf_counter() - started, manifest)
    write_json_atomic(run_dir / "summary.json", summary)
    plot_curves(history, run_dir / "curves.png", title=f"{cfg.dataset.name}, {cfg.num_clients} clients")
    log.info("final central accuracy: %s", summary["final_central_acc"])
    log.info("results in: %s", run_dir)
    return summary["final_central_acc"]
