"""The server side of an algorithm: a FedAvg-shaped strategy with client state and extras.

`Algorithm` is a `flwr.serverapp.strategy.FedAvg` with the harness's sampling
(`sim.federation.strategy.VirtualClients`) that also

- names its client rule in every train message (`client-rule` plus `rule_config()`),
- ships the server's extras (`server.<name>`, from `server_extras()`) and each sampled
  client's state (`state.<cid>`, from a `ClientStateStore`) with the message,
- takes each trained client's new state from the reply (a failed client's state stays),
  averages the replies' extras like the model, lets FedAvg average the model, and then
  applies `server_update()` (SCAFFOLD's control update, FedDyn's correction, ...),
- reports its own per-round values as extra history columns (`history_columns`).

A subclass is an algorithm: set `client_rule` and override the three hooks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategy

from sim.algorithms.client_state import ClientStateStore
from sim.algorithms.rule import EXTRA_PREFIX, SERVER_PREFIX, STATE_PREFIX, to_record
from sim.federation.strategy import VirtualClients

log = logging.getLogger(__name__)
Arrays = dict[str, np.ndarray]
STATE_DIR = "client_state"


def record_to_numpy(record: ArrayRecord) -> Arrays:
    """An ArrayRecord as float64 NumPy arrays (server-side arithmetic)."""
    return {k: np.asarray(v.numpy(), dtype=np.float64) for k, v in record.items()}


def numpy_to_record(arrays: Arrays, like: ArrayRecord) -> ArrayRecord:
    """NumPy arrays as an ArrayRecord with the dtypes of `like`."""
    return to_record({k: np.asarray(arrays[k], dtype=like[k].numpy().dtype) for k in like.keys()})


def norm(arrays: Arrays | None) -> float:
    """The L2 norm of a dict of arrays (0 for None)."""
    return float(np.sqrt(sum(float(np.square(v).sum()) for v in arrays.values()))) if arrays else 0.0


class Algorithm(VirtualClients, flwr_strategy.FedAvg):
    """FedAvg plus client state, server extras and a server update (see the module docstring).

    Keyword arguments: `client_rule` (a dotted `ClientRule` class; default the class's
    own), `state_memory_mb` (client state held in memory before it spills to the run
    directory), and every FedAvg / `VirtualClients` argument.
    """

    client_rule = "sim.algorithms.rule.ClientRule"
    history_columns: tuple[str, ...] = ()
    personalised = False  # True: federated evaluation also scores the personal models

    def __init__(self, *, client_rule: str | None = None, state_memory_mb: float = 256.0, **kwargs: Any):
        super().__init__(**kwargs)
        if client_rule:
            self.client_rule = client_rule
        self.state_memory_mb = float(state_memory_mb)
        self.client_states: ClientStateStore | None = None
        self.current: Arrays | None = None  # the global model sent this round

    # ---- hooks for subclasses ------------------------------------------------------

    def rule_config(self) -> dict[str, Any]:
        """Config entries the client rule reads (its hyper-parameters)."""
        return {}

    def server_extras(self) -> dict[str, Arrays]:
        """Server arrays every client of the round receives (`server.<name>`)."""
        return {}

    def server_update(self, server_round: int, averaged: Arrays, extras: dict[str, Arrays],
                      metrics: MetricRecord, trained_examples: int) -> tuple[Arrays, dict[str, float]]:
        """The new global model from the averaged reply model and extras; plus history values."""
        return averaged, {}

    # ---- wiring --------------------------------------------------------------------

    def prepare_run(self, run_dir: Path) -> None:
        """Called by `sim.run.recipe` once built (and restored): client state goes under `run_dir`."""
        if self.client_states is None:
            self.client_states = ClientStateStore(Path(run_dir) / STATE_DIR, self.state_memory_mb)

    def _store(self) -> ClientStateStore:
        if self.client_states is None:
            raise RuntimeError("call prepare_run(run_dir) before the first round: client state lives in the run dir")
        return self.client_states

    def total_examples(self) -> int:
        """Training examples over every client (the weight base of SCAFFOLD's and FedDyn's server state)."""
        return int(np.sum(self.planner.train_sizes))

    def _record(self, values: dict[str, float]) -> None:
        record_extra = getattr(self.observer, "record_extra", None)
        if record_extra is not None and values:
            record_extra(values)

    def _attach(self, messages: Iterable[Message], extras: dict[str, Arrays], with_state: bool) -> list[Message]:
        messages = list(messages)
        store = self._store()
        shared = {f"{SERVER_PREFIX}{name}": to_record(arrays) for name, arrays in extras.items()}  # built once
        for msg in messages:
            for key, record in shared.items():
                msg.content[key] = record
            if with_state:
                for cid in msg.content[self.configrecord_key]["cids"]:
                    state = store.get(cid)
                    if state is not None:
                        msg.content[f"{STATE_PREFIX}{cid}"] = ArrayRecord(state)  # as it came back: no re-encoding
        return messages

    # ---- the round -----------------------------------------------------------------

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        self.current = record_to_numpy(arrays)
        self._template = arrays
        config = ConfigRecord({**dict(config), "client-rule": self.client_rule, **self.rule_config()})
        messages = super().configure_train(server_round, arrays, config, grid)
        return self._attach(messages, self.server_extras(), with_state=True)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        absolute = server_round + self.planner.round_offset
        store = self._store()
        extra_sums: dict[str, Arrays] = {}
        trained = 0
        for msg in sorted(replies, key=self.reply_order):
            if msg.has_error():
                continue  # the pack's clients keep their previous state
            content = msg.content
            weight = float(next(iter(content.metric_records.values()))[self.weighted_by_key])
            trained += int(weight)
            for key in [k for k in content.array_records if k.startswith((STATE_PREFIX, EXTRA_PREFIX))]:
                record = content.array_records[key]
                del content[key]
                if key.startswith(STATE_PREFIX):
                    store.put(int(key[len(STATE_PREFIX):]), absolute, dict(record.items()))  # kept serialised
                else:
                    sums = extra_sums.setdefault(key[len(EXTRA_PREFIX):], {})
                    for k, v in record.items():
                        sums[k] = sums.get(k, 0.0) + np.asarray(v.numpy(), dtype=np.float64) * weight
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None or self.current is None:
            return arrays, metrics
        extras = {name: {k: v / trained for k, v in sums.items()} for name, sums in extra_sums.items()}
        new, values = self.server_update(absolute, record_to_numpy(arrays), extras, metrics, trained)
        self._record(values)
        return numpy_to_record(new, self._template), metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        if self.personalised:
            config = ConfigRecord({**dict(config), "client-rule": self.client_rule, **self.rule_config()})
        messages = super().configure_evaluate(server_round, arrays, config, grid)
        return self._attach(messages, {}, with_state=self.personalised)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        metrics = super().aggregate_evaluate(server_round, replies)
        if metrics is not None and self.personalised and "personal_eval_acc" in metrics:
            self._record({k: float(metrics[k]) for k in ("personal_eval_loss", "personal_eval_acc")})
        return metrics
