"""What a run shows on the console: one progress bar, and quiet libraries."""

from __future__ import annotations

import logging
import warnings

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

CHATTY_LOGGERS = ("flwr", "ray", "alembic", "filelock", "datasets", "matplotlib", "PIL", "urllib3")
KNOWN_NOISE = (
    "`run_simulation` function is deprecated",  # we call Flower's Python API on purpose
    "will no longer override accelerator visible devices",  # Ray's notice about a future default
    "Federated evaluation will be skipped",  # eval_clients_per_round=0 asked for exactly that
)


class _DropKnownNoise(logging.Filter):
    """Drops library notices the harness has already acted on."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in KNOWN_NOISE)


def quiet_libraries(verbose: bool) -> None:
    """Flower, Ray and friends log at WARNING unless `verbose`, through the root handlers.

    Flower installs a console handler of its own; it is removed so that Flower's records
    go once through the run's handlers (console and the run's log file).
    """
    level = logging.INFO if verbose else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    flwr_logger = logging.getLogger("flwr")
    for handler in list(flwr_logger.handlers):
        flwr_logger.removeHandler(handler)
    flwr_logger.propagate = True
    if not any(isinstance(f, _DropKnownNoise) for f in flwr_logger.filters):
        flwr_logger.addFilter(_DropKnownNoise())
    for text in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=f".*{text}.*")


class RoundProgress:
    """A progress bar over rounds showing the latest central accuracy and the ETA."""

    def __init__(self, num_rounds: int, done: int = 0):
        self._progress = Progress(
            TextColumn("[bold]rounds"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("central acc {task.fields[acc]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        self._task = self._progress.add_task("rounds", total=num_rounds, completed=done, acc="-")

    def __enter__(self) -> "RoundProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def update(self, server_round: int, central_acc: float | None) -> None:
        """Advance to `server_round` (round 0 is the initial evaluation)."""
        fields = {} if central_acc is None else {"acc": f"{central_acc:.4f}"}
        self._progress.update(self._task, completed=server_round, **fields)
