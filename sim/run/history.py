"""Per-round history of a run: `history.csv`, `summary.json` and `curves.png`.

`history.csv` has one row per round, round 0 being the initial central evaluation. Each
row is appended and flushed (and fsynced) as soon as its round ends, so an interrupted
run keeps every finished round and the file is always valid CSV. An algorithm may add
its own columns after the fixed ones (`HistoryWriter.add_columns`, before the first row).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Mapping

COLUMNS = (
    "round",
    "train_clients",
    "train_failures",
    "eval_clients",
    "eval_failures",
    "train_loss",
    "fed_eval_loss",
    "fed_eval_acc",
    "central_loss",
    "central_acc",
    "round_s",
    "elapsed_s",
)
TIME_COLUMNS = ("round_s", "elapsed_s")
# Columns an algorithm adds after the fixed ones (`HistoryWriter.add_columns`), by who writes them.
EXTRA_COLUMNS = {
    "control_norm": "SCAFFOLD: L2 norm of the server's control variate c after the round",
    "dyn_norm": "FedDyn: L2 norm of the server's correction h after the round",
    "tau_eff": "FedNova: effective local steps of the round, sum of p_i * a_i",
    "personal_eval_loss": "Ditto, FedPer: example-weighted loss of each evaluated client's personal model on its validation data",
    "personal_eval_acc": "Ditto, FedPer: example-weighted accuracy of the personal models (compare fed_eval_acc)",
    "epsilon": "DP with accounting: epsilon spent so far at strategy.target_delta (Flower's RDP accountant)",
}
KNOWN_COLUMNS = COLUMNS + tuple(EXTRA_COLUMNS)


def _cell(value: Any) -> str:
    """CSV text for one value: empty for None/NaN, repr-exact floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class HistoryWriter:
    """Appends rows to `history.csv`, writing the header once."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = threading.Lock()  # held while a row is written: a clean exit waits for it
        self.columns = COLUMNS
        if not self.path.exists() or self.path.stat().st_size == 0:
            with self.path.open("w", newline="") as f:
                f.write(",".join(COLUMNS) + "\n")

    def add_columns(self, extra: tuple[str, ...]) -> None:
        """Append an algorithm's own columns after the fixed ones (a resumed file must have them)."""
        columns = COLUMNS + tuple(c for c in extra if c not in COLUMNS)
        with self.lock:
            lines = self.path.read_text().splitlines(keepends=True)
            header = lines[0].strip().split(",")
            if tuple(header) != columns:
                if len(lines) > 1:
                    raise ValueError(f"{self.path} has columns {header}, this run writes {list(columns)}")
                self.path.write_text(",".join(columns) + "\n")
        self.columns = columns

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one round's row (missing columns stay empty) and flush it to disk."""
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"unknown history columns: {sorted(unknown)}")
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow([_cell(row.get(c)) for c in self.columns])
        with self.lock, self.path.open("a", newline="") as f:
            f.write(line.getvalue())
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, last_round: int) -> None:
        """Drop rows after `last_round` (a resumed run redoes them), atomically."""
        with self.lock:
            lines = self.path.read_text().splitlines(keepends=True)
            kept = [lines[0]] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= last_round]
            tmp = self.path.with_suffix(".csv.tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, self.path)


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON to a temporary file beside `path`, then rename it into place."""
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


STEADY_FROM_ROUND = 2  # round 0 is the initial evaluation; round 1 includes Ray worker start-up


def steady_rounds(history):
    """The rows of rounds >= 2 of a history DataFrame: round 0 is the initial evaluation, round 1 includes worker start-up."""
    return history[history["round"] >= STEADY_FROM_ROUND]


def median_round_s(history) -> float:
    """Median `round_s` over the steady rounds (nan when the run had fewer than 2 rounds)."""
    steady = steady_rounds(history)["round_s"]
    return float(steady.median()) if len(steady) else math.nan


def summarize(history, wall_s: float, manifest: str | None, clients_at_once: int | None = None) -> dict[str, Any]:
    """Final and best central accuracy, rounds, wall time, and what a benchmark reads, from a history DataFrame.

    `median_round_s` is the median `round_s` of the steady rounds (from round 2 on; None
    for a run of fewer rounds); `clients_at_once` is how many client tasks ran in parallel.
    """
    central = history.dropna(subset=["central_acc"])
    median_s = median_round_s(history)
    best = central.loc[central["central_acc"].idxmax()] if len(central) else None
    last = central.iloc[-1] if len(central) else None
    return {
        "rounds": int(history["round"].max()) if len(history) else 0,
        "final_central_acc": None if last is None else float(last["central_acc"]),
        "final_central_loss": None if last is None else float(last["central_loss"]),
        "best_central_acc": None if best is None else float(best["central_acc"]),
        "best_round": None if best is None else int(best["round"]),
        "wall_s": round(wall_s, 3),
        "partition_manifest": manifest,
        "clients_at_once": clients_at_once,
        "median_round_s": None if math.isnan(median_s) else median_s,
    }


def plot_curves(history, path: Path, title: str = "") -> None:
    """Accuracy (central and federated) and loss against round, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for column, label in (("central_acc", "central"), ("fed_eval_acc", "federated eval")):
        points = history.dropna(subset=[column])
        if len(points):
            acc_ax.plot(points["round"], points[column], marker="o", ms=3, label=label)
    for column, label in (
        ("central_loss", "central"),
        ("fed_eval_loss", "federated eval"),
        ("train_loss", "train"),
    ):
        points = history.dropna(subset=[column])
        if len(points):
            loss_ax.plot(points["round"], points[column], marker="o", ms=3, label=label)
    acc_ax.set(xlabel="round", ylabel="accuracy", title="accuracy")
    loss_ax.set(xlabel="round", ylabel="loss", title="loss")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
