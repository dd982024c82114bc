"""The Flower ServerApp: runs the strategy, evaluates centrally, records every round.

`RoundRecorder` is both the strategy's observer (it hears each round's train and
evaluate aggregates) and its `evaluate_fn`, which Flower calls before round 1 and after
every round: that is where central evaluation runs (when due), the round's row is
appended to `history.csv`, and the progress bar moves.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from sim.errors import RunAborted
from sim.federation.flower_internals import set_reply_poll_interval
from sim.run.history import HistoryWriter
from sim.federation.training import Normalizer, evaluate

log = logging.getLogger(__name__)
REPLY_POLL_S = 0.005  # how often the server checks for replies (Flower's default, 0.1 s, adds up per round)


class CentralEvaluator:
    """Loss and accuracy of a global model on the full test set."""

    def __init__(
        self,
        make_model: Callable[[], torch.nn.Module],
        images: np.ndarray,
        labels: np.ndarray,
        mean: list[float],
        std: list[float],
        batch_size: int,
        device: str = "cpu",
    ):
        self.device = torch.device(device)
        self.model = make_model().to(self.device)
        self.images, self.labels = images, labels
        self.normalize = Normalizer(mean, std, self.device)
        self.batch_size = batch_size

    def __call__(self, arrays: ArrayRecord) -> tuple[float, float]:
        """(loss, accuracy) of the model held in `arrays`."""
        self.model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc, _ = evaluate(
            self.model, self.images, self.labels, None, self.batch_size, self.normalize, self.device
        )
        return loss, acc


class RoundRecorder:
    """Turns each round's aggregates and central evaluation into a history row."""

    def __init__(
        self,
        writer: HistoryWriter,
        central: CentralEvaluator | None,
        central_eval_every: int,
        num_rounds: int,
        on_round: Callable[[int, float | None], None] = lambda r, acc: None,
        max_failed_rounds: int = 3,
        round_offset: int = 0,
        on_row: Callable[[dict], None] = lambda row: None,
    ):
        self.writer = writer
        self.on_row = on_row  # hears each row once it is in history.csv (the experiment trackers)
        self.central = central
        self.central_eval_every = central_eval_every
        self.num_rounds = num_rounds
        self.on_round = on_round
        self.max_failed_rounds = max_failed_rounds
        self.round_offset = round_offset  # rounds done before a resume; their rows exist already
        self.checkpoint: Callable[[int, ArrayRecord], None] | None = None
        self._failed_streak = 0
        self._row: dict = {}
        self._started = self._last = time.perf_counter()

    def start(self) -> None:
        """Mark the start of the strategy (the time origin of `elapsed_s`)."""
        self._started = self._last = time.perf_counter()

    def record_train(self, server_round: int, clients: int, failures: int, metrics: MetricRecord | None) -> None:
        """Remember the round's training counts and example-weighted train loss."""
        self._row.update(train_clients=clients, train_failures=failures)
        if metrics is not None and "train_loss" in metrics:
            self._row["train_loss"] = float(metrics["train_loss"])

    def record_evaluate(self, server_round: int, clients: int, failures: int, metrics: MetricRecord | None) -> None:
        """Remember the round's federated-evaluation counts, loss and accuracy."""
        if clients == 0:
            return
        self._row.update(eval_clients=clients, eval_failures=failures)
        if metrics is not None and "eval_loss" in metrics:
            self._row.update(fed_eval_loss=float(metrics["eval_loss"]), fed_eval_acc=float(metrics["eval_acc"]))

    def record_extra(self, values: dict[str, float]) -> None:
        """Remember an algorithm's own values for this round (its extra history columns)."""
        self._row.update(values)

    def central_due(self, server_round: int) -> bool:
        """Central evaluation runs at round 0, every k-th round and the last round."""
        k = self.central_eval_every
        if self.central is None or k <= 0:
            return False
        return server_round % k == 0 or server_round == self.num_rounds

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower's `evaluate_fn`: the end of a round (round 0: before training)."""
        if server_round == 0 and self.round_offset > 0:
            return None  # a resumed run: the restored model's row is already in history.csv
        server_round += self.round_offset
        result = None
        row = {"round": server_round, **self._row}
        if self.central_due(server_round):
            loss, acc = self.central(arrays)
            row.update(central_loss=loss, central_acc=acc)
            result = MetricRecord({"central_loss": loss, "central_acc": acc})
        now = time.perf_counter()
        row.update(round_s=round(now - self._last, 4), elapsed_s=round(now - self._started, 4))
        self._last = now
        self.writer.append(row)
        self.on_row(row)
        self._row = {}
        if self.checkpoint is not None:
            self.checkpoint(server_round, arrays)
        self.on_round(server_round, row.get("central_acc"))
        self._check_failures(server_round, row)
        return result

    def _check_failures(self, server_round: int, row: dict) -> None:
        """Abort after `max_failed_rounds` consecutive rounds in which every client failed."""
        clients = row.get("train_clients") or 0
        all_failed = clients > 0 and row.get("train_failures") == clients
        self._failed_streak = self._failed_streak + 1 if all_failed else 0
        if self.max_failed_rounds > 0 and self._failed_streak >= self.max_failed_rounds:
            first = server_round - self._failed_streak + 1
            raise RunAborted(
                f"every client failed in {self._failed_streak} consecutive rounds ({first}..{server_round}); "
                f"history.csv keeps rounds 0..{server_round}. Lower client.failure_rate or raise max_failed_rounds"
            )


def run_strategy(
    grid: Grid,
    strategy,
    initial_arrays: ArrayRecord,
    recorder: RoundRecorder,
    num_rounds: int,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    round_timeout: float,
) -> None:
    """Run `strategy` on `grid` for `num_rounds` with `recorder` as evaluate_fn (any ServerApp's main)."""
    set_reply_poll_interval(grid, REPLY_POLL_S)  # Flower's in-memory grid polls every 0.1 s
    recorder.start()
    strategy.start(
        grid=grid,
        initial_arrays=initial_arrays,
        num_rounds=num_rounds,
        timeout=round_timeout,
        train_config=train_config,
        evaluate_config=evaluate_config,
        evaluate_fn=recorder,
    )


def build_server_app(
    strategy,
    initial_arrays: ArrayRecord,
    recorder: RoundRecorder,
    num_rounds: int,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    round_timeout: float,
) -> ServerApp:
    """A ServerApp whose main runs `strategy` for `num_rounds` with `recorder` as evaluate_fn."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_strategy(grid, strategy, initial_arrays, recorder, num_rounds, train_config, evaluate_config, round_timeout)

    return app
