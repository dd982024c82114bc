"""What every experiment tracker implements, and what it is told about the run.

A tracker (TensorBoard, MLflow, W&B) is driven by `sim.tracking.fanout.Trackers` from one
background thread, in this order:

    start(info, state)          open or reopen the tracker's run (`state` survives a resume);
                                it may return the last round its store holds
    log_params(params, ovr)     the resolved config (flattened) and the overrides; fresh runs only
    log_round(step, metrics)    one history.csv row, step = its round; each step at most once
    log_summary(summary, files) summary.json figures; curves.png, summary.json, partition plot
    finish(status)              FINISHED, FAILED or KILLED

Any of these may raise: the fan-out turns that into one warning and drops the tracker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

STATUSES = ("FINISHED", "FAILED", "KILLED")  # how a run ended (MLflow's names)


@dataclass(frozen=True)
class RunInfo:
    """The run as trackers see it: where it writes, its name, its sweep and its settings."""

    run_dir: Path  # the run directory (history.csv, summary.json, ...)
    name: str  # e.g. "2026-11-28/12-00-00", or "multirun/2026-11-28/12-00-00/3" for a sweep job
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config, nested
    overrides: tuple[str, ...] = ()  # the command-line overrides of the run (or the job)
    group: str | None = None  # a multirun job: its sweep, e.g. "multirun/2026-11-28/12-00-00"
    job: int | None = None  # a multirun job: its number in the sweep
    resumed: bool = False  # True when `resume=` continues this run directory

    @property
    def label(self) -> str:
        """A short display name: the job number and overrides of a sweep job, else `name`."""
        if self.job is None:
            return self.name
        shown = " ".join(self.overrides)
        return f"{self.job}: {shown}" if shown else str(self.job)


class Tracker:
    """Base class of the trackers; every method is called from one background thread."""

    requires = ""  # the Python package the tracker imports (checked before the run starts)
    extra = ""  # the pyproject extra that installs it: pip install -e '.[<extra>]'

    def start(self, info: RunInfo, state: dict[str, Any]) -> int | None:
        """Open the tracker's run; read and fill `state` (saved in the run dir) to reopen it on resume.

        Returns the last round the tracker's own store holds when it can tell (a reopened
        run), else None; the fan-out then logs from the round after it.
        """
        return None

    def log_params(self, params: Mapping[str, Any], overrides: tuple[str, ...]) -> None:
        """The flattened resolved config and the overrides (a fresh run only)."""

    def log_round(self, step: int, metrics: Mapping[str, float]) -> None:
        """One round's history.csv values (empty cells left out)."""

    def log_summary(self, summary: Mapping[str, Any], files: list[Path]) -> None:
        """The run's summary.json figures and its plots and summary file."""

    def flush(self) -> None:
        """Make what was logged so far visible to the tracker's UI and readers."""

    def finish(self, status: str) -> None:
        """Close the tracker's run with `status` (one of STATUSES)."""


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}, "c": [1, 2]}` -> `{"a.b": 1, "c": "[1, 2]"}` (lists as text, None kept)."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = str(list(value))
        else:
            flat[name] = value
    return flat


def numeric_summary(summary: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of summary.json (final and best accuracy, rounds, wall time), as floats."""
    return {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
