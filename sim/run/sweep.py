"""`sweep.csv`: one row per job of a Hydra multirun, rewritten after every job.

A Hydra callback (configured under `hydra.callbacks` in conf/config.yaml), so it works
with any launcher and sweeper, the optuna sweeper included. Columns: every overridden
key as its own column, then status, error, final and best central accuracy, rounds,
wall time, median round time, driver memory and the run directory.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import psutil
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger(__name__)
RESULT_COLUMNS = (
    "status",
    "error",
    "final_central_acc",
    "best_central_acc",
    "rounds",
    "wall_s",
    "median_round_s",
    "driver_rss_mb",
    "run_dir",
)


def driver_rss_mb() -> float:
    """Resident memory of this process now, in MiB (psutil)."""
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """`["client.lr=0.1", "+x=1", "~y"]` -> `{"client.lr": "0.1", "x": "1"}`."""
    parsed = {}
    for item in overrides:
        if "=" not in item:
            continue
        key, value = item.split("=", 1)
        parsed[key.lstrip("+~")] = value
    return parsed


def job_row(job_return: JobReturn, run_dir: Path) -> dict[str, Any]:
    """The sweep.csv row of one finished (or failed) job."""
    row: dict[str, Any] = dict(parse_overrides(list(job_return.overrides or [])))
    failed = job_return.status != JobStatus.COMPLETED
    row["status"] = "failed" if failed else "completed"
    row["error"] = str(job_return._return_value).splitlines()[0][:300] if failed else ""
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        for key in ("final_central_acc", "best_central_acc", "rounds", "wall_s"):
            row[key] = summary.get(key)
    history_path = run_dir / "history.csv"
    if history_path.exists():
        import pandas as pd

        round_s = pd.read_csv(history_path)["round_s"].iloc[2:]  # skip round 0 and start-up round 1
        row["median_round_s"] = round(float(round_s.median()), 4) if len(round_s) else None
    row["driver_rss_mb"] = driver_rss_mb()
    row["run_dir"] = str(run_dir)
    return row


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole CSV atomically: override columns first, then RESULT_COLUMNS."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in RESULT_COLUMNS and k not in keys]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*keys, *RESULT_COLUMNS], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


FAILED_JOBS: list[int] = []  # this process's failed jobs; with fail_fast=true the next job stops the sweep


class SweepSummary(Callback):
    """Writes `<sweep dir>/sweep.csv` after every job of a multirun and notes failed jobs.

    (Hydra swallows exceptions raised in callbacks, so stopping a sweep is left to the
    entry point, which reads `FAILED_JOBS` before each job.)
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.rows = []
        FAILED_JOBS.clear()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        run_dir = Path(config.hydra.runtime.output_dir)
        self.rows.append(job_row(job_return, run_dir))
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_rows(sweep_dir / "sweep.csv", self.rows)
        if job_return.status == JobStatus.FAILED:
            log.error("job %s failed: %s", config.hydra.job.num, self.rows[-1]["error"])
            FAILED_JOBS.append(int(config.hydra.job.num))
