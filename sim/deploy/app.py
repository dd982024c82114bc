"""The Flower App that `flwr run .` loads (`[tool.flwr.app.components]` in pyproject.toml).

The same recipe as `python -m sim` (`sim.run.recipe`'s steps, `sim.federation.server_app`, `sim.federation.client_app`),
started by Flower instead of by the harness:

- **ServerApp** (`server_app`): composes the Hydra config from the run-config key
  `overrides` (`sim.config.compose`), validates it, writes the run directory under the working
  directory of the process Flower runs it in (the SuperLink's), loads data and partition,
  and runs the configured strategy on Flower's grid with the same `RoundRecorder`.
- **ClientApp** (`client_app`): each process reads the config the server composed (sent as
  YAML in every message, so no client runs Hydra) and loads the
  cached arrays and the partition manifest itself (`ConfigData`), so nothing is shared
  through Ray: the same code serves the Simulation Runtime's virtual SuperNodes and real
  SuperNodes started with `--node-config "partition-id=... num-partitions=... data-dir=..."`.

On the Simulation Runtime each message carries a pack of virtual clients, as in
`python -m sim`: packs = min(clients Ray runs at once, connected SuperNodes). In a
deployment (run-config `deployment=true`, set by `sim.deploy`) each SuperNode is one
client: the server asks every node for its partition id (a `query` message) and sends
each sampled client's message to the node that holds its partition.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from functools import lru_cache
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp
from omegaconf import DictConfig

from sim.federation.client_app import build_client_app
from sim.federation.client_data import ClientData
from sim.federation.client_settings import ClientSettings
from sim.federation.flower_internals import (
    remove_message_pickup_floor, shorten_object_pull_backoff, shorten_superlink_reply_poll,
)
from sim.config.compose import absolute_paths, client_config_from, client_config_text, new_run, split_overrides
from sim.run.console import RoundProgress, quiet_libraries
from sim.errors import ConfigError
from sim.run.history import HistoryWriter
from sim.deploy.doorbell import NODE_DOORBELLS_ENV, RingingGrid
from sim.deploy.packed_arrays import PackedArraysGrid, packed_arrays_mod
from sim.deploy.roll_call import answer_roll_call, roll_call
from sim.federation.ray_runtime import concurrency
from sim.run.recipe import _start_point, central_evaluator, load_data, make_strategy, save_results
from sim.federation.server_app import RoundRecorder, run_strategy

log = logging.getLogger("sim")
NODE_WAIT_S = 30.0  # how long the server waits for the SuperNodes a run needs before it starts


def _log_to_stdout(verbose: bool) -> None:
    """Send the harness's log lines to stdout, which Flower streams to `flwr run --stream` / `flwr log`."""
    quiet_libraries(verbose)
    if not any(getattr(h, "_sim_flwr", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[sim] %(message)s"))
        handler._sim_flwr = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def message_config(cfg: DictConfig, base: Path) -> ConfigRecord:
    """What a client needs for the run's data and settings: the run's composed config (YAML, composed
    by the server once rather than by Hydra in every client process) and the base directory of its
    relative paths."""
    return ConfigRecord({"config": client_config_text(cfg), "base-dir": str(base)})


def _wait_for_nodes(grid: Grid, wanted: int, timeout: float) -> list[int]:
    """The connected SuperNodes' ids once `wanted` are there (or whatever joined by `timeout`)."""
    deadline = time.monotonic() + timeout
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < wanted and time.monotonic() < deadline:
        time.sleep(0.2)
        nodes = sorted(grid.get_node_ids())
    return nodes


def _runtime_concurrency(resources) -> int:
    """`sim.federation.ray_runtime.concurrency` on the Ray instance the Simulation Runtime starts beside the ServerApp."""
    import ray

    deadline = time.monotonic() + NODE_WAIT_S
    while not ray.is_initialized() and time.monotonic() < deadline:
        time.sleep(0.1)
    return concurrency(resources)


def serve(grid: Grid, context: Context) -> Path:
    """The ServerApp's main: one run of the configured experiment; returns its run directory."""
    overrides = str(context.run_config.get("overrides", ""))
    deployment = bool(context.run_config.get("deployment", False))
    if deployment:
        if os.environ.get(NODE_DOORBELLS_ENV):  # sim.deploy's SuperNodes wait to be rung (sim.deploy.doorbell)
            grid = RingingGrid(grid, os.environ[NODE_DOORBELLS_ENV])
        grid = PackedArraysGrid(grid)  # a message's arrays travel as one object each way, not two per array
    base = Path(os.getcwd())
    from sim.config.validate import validate

    cfg, run_dir = new_run(split_overrides(overrides), base)
    _log_to_stdout(bool(cfg.verbose))
    try:
        validate(cfg)
    except ConfigError:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    config = message_config(cfg, base)  # before the data load adds its shape and stats to cfg
    remove_message_pickup_floor()  # Flower's vce engine picks up messages as soon as they exist
    shorten_superlink_reply_poll()  # on a SuperLink: replies seen within 0.1-0.5 s, not on a 3 s tick
    shorten_object_pull_backoff()  # and their objects asked for again within 0.2 s, not after 1-10 s
    log.info("run directory: %s", run_dir)
    started = time.perf_counter()
    cfg, data, partition = load_data(absolute_paths(cfg, base))  # cfg now holds the data's shape and stats
    writer = HistoryWriter(run_dir / "history.csv")
    done, arrays, checkpoint = _start_point(cfg, run_dir, writer, False)
    central = central_evaluator(cfg, data)
    del data
    num_rounds = int(cfg.num_rounds)
    if deployment:
        roster = roll_call(grid, int(cfg.num_clients), min(NODE_WAIT_S, float(cfg.round_timeout)),
                           float(cfg.round_timeout))
        max_packs = int(cfg.num_clients)  # one client per message: each SuperNode is one client
    else:
        nodes = _wait_for_nodes(grid, 1, NODE_WAIT_S)
        max_packs = max(1, min(_runtime_concurrency(cfg.resources), len(nodes)))
        log.info("SuperNodes: %d; clients per message pack: up to %d packs", len(nodes), max_packs)
    with RoundProgress(num_rounds, done) as progress:
        on_round = progress.update
        if deployment:
            def on_round(server_round: int, central_acc: float | None) -> None:
                progress.update(server_round, central_acc)
                roster()  # SuperNodes that joined since take over clients without a node

        recorder = RoundRecorder(
            writer, central, int(cfg.central_eval_every), num_rounds, on_round=on_round,
            max_failed_rounds=int(cfg.max_failed_rounds), round_offset=done,
        )
        strategy = make_strategy(cfg, partition, recorder, max_packs, done, checkpoint, run_dir)
        if deployment:
            strategy.node_of_client = roster.node_of_client  # kept up to date by roster()
        run_strategy(grid, strategy, arrays, recorder, num_rounds, config, config, float(cfg.round_timeout))
    save_results(cfg, run_dir, partition, started, clients_at_once=max_packs)
    return run_dir


@lru_cache(maxsize=1)
def _client_side(config_text: str, base: str) -> tuple[ClientData, ClientSettings]:
    """The run's arrays and client settings, from the config the server sent (read once per process and run)."""
    cfg, data, partition = load_data(client_config_from(config_text, base))  # cfg now holds the data's stats
    return ClientData.from_parts(data.train_images, data.train_labels, partition), ClientSettings.from_config(cfg)


class ConfigData:
    """A client's data and settings, loaded in its own process from the config in the message.

    Both are cached per process (`_client_side`), not on the instance: Flower's Simulation
    Runtime sends the ClientApp, and so this object, to its workers with every message.
    """

    @staticmethod
    def _key(config: ConfigRecord, context: Context) -> tuple[str, str]:
        """(config YAML, base directory); a SuperNode's `data-dir` replaces the server's base."""
        return str(config["config"]), str(context.node_config.get("data-dir", config["base-dir"]))

    def for_message(self, config: ConfigRecord, context: Context) -> ClientData:
        """The arrays of the run named in `config`."""
        return _client_side(*self._key(config, context))[0]

    def settings_for_message(self, config: ConfigRecord, context: Context) -> ClientSettings:
        """The client settings of the run named in `config` (`ClientSettings.from_config`)."""
        return _client_side(*self._key(config, context))[1]


server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    from sim.data import DataError
    from sim.errors import RunAborted

    try:
        serve(grid, context)
    except (ConfigError, DataError, RunAborted) as err:  # bad input or an aborted run: its one line, then fail the run
        _log_to_stdout(False)
        log.error("error: %s", err)
        raise RuntimeError(str(err)) from None


client_app = build_client_app(ConfigData(), app_mods=[packed_arrays_mod])  # a deployment's arrays come packed
# Flower's vce engine imports this module (for the ClientApp) before its pickup thread starts:
# the shim must be in place by then for messages to move as soon as they exist.
remove_message_pickup_floor()


@client_app.query()
def _partition_id(msg: Message, context: Context) -> Message:
    """A deployment's roll call: which partition this SuperNode holds."""
    return answer_roll_call(msg, context.node_config)
