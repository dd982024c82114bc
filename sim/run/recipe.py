"""One simulation run, as a short recipe: config in, history and summary out.

    1. data       load (or decode once and cache) the data set
    2. partition  split the train set across clients, reusing a saved manifest
    3. model      the initial global model, seeded (or the checkpoint's, when resuming)
    4. ray        start or attach to Ray; put the arrays in its object store once
    5. strategy   the configured Flower strategy with the harness's client sampling
    6. simulate   Flower's simulation engine runs the ServerApp and ClientApps
    7. save       summary.json and curves.png beside history.csv

The trackers of `cfg.logger` (sim.tracking) follow along: config at the start, each
history row as its round ends, the summary and plots at the end.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sim.run.checkpoint import load_checkpoint, restore_rng, restore_strategy_state, save_checkpoint
from sim.federation.client_app import build_client_app
from sim.federation.client_data import ClientData, DataHandle
from sim.federation.client_settings import ClientSettings
from sim.run.console import RoundProgress, quiet_libraries
from sim.data import load_dataset
from sim.federation.flower_internals import remove_message_pickup_floor
from sim.errors import RunStopped
from sim.run.history import HistoryWriter, plot_curves, summarize, write_json_atomic
from sim.run.interrupt import child_pids, interruptible, interrupts_remembered
from sim.partition.report import report_paths
from sim.models import build_model, model_spec
from sim.data.spec import make_partition, with_data
from sim.federation.ray_runtime import client_resources, concurrency, kept_ray_pids, ray_session
from sim.federation.sampling import RoundPlanner, num_supernodes
from sim.federation.server_app import CentralEvaluator, RoundRecorder, build_server_app
from sim.tracking import Trackers, open_trackers

log = logging.getLogger(__name__)


def initial_model(cfg: DictConfig) -> torch.nn.Module:
    """The global model before round 1, its weights drawn from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed))
        return build_model(model_spec(cfg))


def _start_point(cfg: DictConfig, run_dir: Path, writer: HistoryWriter, resume: bool):
    """(rounds already done, initial arrays, checkpoint or None) for a fresh or resumed run."""
    random.seed(int(cfg.seed))  # Flower's DP noise and node sampling draw from the global RNGs
    np.random.seed(int(cfg.seed) % 2**32)
    arrays = ArrayRecord(initial_model(cfg).state_dict())
    checkpoint = load_checkpoint(run_dir) if resume else None
    if checkpoint is None:
        if resume:
            log.warning("no checkpoint in %s: starting from round 0", run_dir)
            writer.truncate_after(-1)
        return 0, arrays, None
    done = int(checkpoint["round"])
    writer.truncate_after(done)
    restore_rng(checkpoint)
    log.info("resuming after round %d", done)
    return done, checkpoint["arrays"], checkpoint


def load_data(cfg: DictConfig):
    """Steps 1 and 2: (config as the data has it, the data set, its partition across `num_clients`).

    The returned config is a new one whose `dataset` node holds the loaded data's shape,
    classes, statistics and name (`sim.data.spec.with_data`); `cfg` itself is not changed.
    """
    data = load_dataset(cfg.dataset, int(cfg.seed))
    cfg = with_data(cfg, data)
    return cfg, data, make_partition(cfg, data)


def central_evaluator(cfg: DictConfig, data) -> CentralEvaluator | None:
    """The server's evaluation of the global model on the test set (None when switched off)."""
    if cfg.central_eval_every <= 0:
        return None
    return CentralEvaluator(
        lambda: build_model(model_spec(cfg)), data.test_images, data.test_labels,
        list(cfg.dataset.mean), list(cfg.dataset.std), int(cfg.client.eval_batch_size),
        device=str(cfg.resources.server_device),
    )


def make_strategy(cfg: DictConfig, partition, recorder: RoundRecorder, max_packs: int, done: int,
                  checkpoint: dict | None, run_dir: Path):
    """Step 5: the configured strategy over the seeded round plan, checkpointing into `run_dir`."""
    planner = RoundPlanner(
        num_clients=int(cfg.num_clients), clients_per_round=int(cfg.clients_per_round),
        eval_clients_per_round=int(cfg.eval_clients_per_round), seed=int(cfg.seed),
        train_sizes=partition.train_sizes(), val_sizes=partition.val_sizes(),
        max_packs=max_packs, packable=bool(cfg.strategy.get("packable", False)), round_offset=done,
    )
    strategy = instantiate(cfg.strategy, _partial_=True)(planner=planner, observer=recorder)
    if checkpoint is not None:
        restore_strategy_state(strategy, checkpoint["strategy"])
    if hasattr(strategy, "prepare_run"):  # client state in the run dir, a privacy ledger restored
        strategy.prepare_run(run_dir)
    recorder.writer.add_columns(tuple(getattr(strategy, "history_columns", ())))  # an algorithm's own columns
    every, num_rounds = int(cfg.checkpoint_every), int(cfg.num_rounds)
    if every > 0:

        def checkpoint_if_due(server_round: int, arrays: ArrayRecord) -> None:
            if server_round % every == 0 or server_round == num_rounds:
                save_checkpoint(run_dir, server_round, arrays, strategy)

        recorder.checkpoint = checkpoint_if_due
    return strategy


def build_apps(cfg: DictConfig, strategy, arrays: ArrayRecord, recorder: RoundRecorder, num_rounds: int,
               handle: DataHandle) -> tuple[ServerApp, ClientApp]:
    """Step 6's apps: the ServerApp runs `strategy` for `num_rounds`, the ClientApps train on `handle`'s data.

    The run's `ClientSettings` are built here, once, and travel with the ClientApp like the
    data handle; the messages carry only what changes per round (`cids`, `server-round`
    and the strategy's own keys).
    """
    server_app = build_server_app(
        strategy, arrays, recorder, num_rounds, ConfigRecord(), ConfigRecord(), float(cfg.round_timeout)
    )
    client_app = build_client_app(handle, ClientSettings.from_config(cfg), mods=getattr(strategy, "client_mods", ()))
    return server_app, client_app


def save_results(cfg: DictConfig, run_dir: Path, partition, started: float, trackers: Trackers | None = None,
                 clients_at_once: int | None = None) -> float | None:
    """Step 7: summary.json and curves.png beside history.csv (and to `trackers`); returns the final central accuracy."""
    import pandas as pd  # only now, after Ray has stopped: 67 MB of the driver's memory the rounds do without

    history = pd.read_csv(run_dir / "history.csv")
    manifest = str(partition.path) if partition.path else None
    summary = summarize(history, time.perf_counter() - started, manifest, clients_at_once)
    summary["dataset"] = OmegaConf.to_container(cfg.dataset, resolve=True)  # as read from the data
    write_json_atomic(run_dir / "summary.json", summary)
    plot_curves(history, run_dir / "curves.png", title=f"{cfg.dataset.name}, {cfg.num_clients} clients")
    if trackers is not None:
        plot = report_paths(partition.path)[1] if partition.path else None  # the partition's label plot
        trackers.log_summary(summary, [run_dir / "curves.png", run_dir / "summary.json", plot])
    log.info("final central accuracy: %s", summary["final_central_acc"])
    log.info("results in: %s", run_dir)
    return summary["final_central_acc"]


def run(cfg: DictConfig, run_dir: Path, resume: bool = False) -> float | None:
    """Run one simulation into `run_dir` (or continue it); return the final central accuracy."""
    run_dir.mkdir(parents=True, exist_ok=True)
    # children from before this run are not its to kill (a tracker's service is); a Ray kept from
    # the sweep's last job is this run's
    spared = child_pids() - kept_ray_pids()
    with open_trackers(cfg, run_dir, resume) as trackers:  # finished (or marked failed) on the way out
        return simulate(cfg, run_dir, resume, trackers, spared)


def simulate(cfg: DictConfig, run_dir: Path, resume: bool, trackers: Trackers, spared: set[int]) -> float | None:
    """The recipe of `run`, its rows and results also going to `trackers`; a signal spares the `spared` pids."""
    from flwr.simulation import run_simulation

    quiet_libraries(cfg.verbose)
    started = time.perf_counter()
    log.info("run directory: %s", run_dir)

    with interrupts_remembered() as stop_if_interrupted:
        # 1. data, 2. partition (cfg becomes a new config holding the data's shape, classes, stats and name)
        cfg, data, partition = load_data(cfg)
        stop_if_interrupted()  # a Ctrl-C during decoding that a finalizer swallowed
    # 3. model
    writer = HistoryWriter(run_dir / "history.csv")
    done, arrays, checkpoint = _start_point(cfg, run_dir, writer, resume)
    trackers.replay(run_dir / "history.csv")  # a resume: rounds the trackers missed (they skip the rest)
    central = central_evaluator(cfg, data)
    num_rounds = int(cfg.num_rounds)
    with RoundProgress(num_rounds, done) as progress:
        recorder = RoundRecorder(
            writer, central, int(cfg.central_eval_every), num_rounds, on_round=progress.update,
            max_failed_rounds=int(cfg.max_failed_rounds), round_offset=done, on_row=trackers.log_round,
        )
        # 4. ray
        with ray_session(cfg.resources, cfg.verbose), interruptible(writer.lock, spared):
            handle = DataHandle.share(ClientData.from_parts(data.train_images, data.train_labels, partition))
            del data  # the train arrays now live in Ray's object store; the driver keeps the test set
            workers = concurrency(cfg.resources)
            log.info("clients running at once: %d", workers)
            # 5. strategy
            packable = bool(cfg.strategy.get("packable", False))
            strategy = make_strategy(cfg, partition, recorder, workers, done, checkpoint, run_dir)
            # 6. simulate
            if done < num_rounds:
                remove_message_pickup_floor()  # messages and replies move as soon as they exist
                try:
                    server_app, client_app = build_apps(cfg, strategy, arrays, recorder, num_rounds - done, handle)
                    run_simulation(
                        server_app=server_app,
                        client_app=client_app,
                        num_supernodes=num_supernodes(
                            int(cfg.clients_per_round), int(cfg.eval_clients_per_round), workers, packable
                        ),
                        backend_config={"client_resources": client_resources(cfg.resources)},
                    )
                except RunStopped as stop:  # a privacy budget: one line, then the summary as usual
                    log.warning("%s", stop)
    # 7. save
    return save_results(cfg, run_dir, partition, started, trackers, clients_at_once=workers)
