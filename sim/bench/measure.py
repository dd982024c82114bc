"""Measuring a harness run from outside: wall time, start-up and peak memory.

`run_harness` launches `python -m sim <overrides> hydra.run.dir=<dir>` (the very code path
of a user's run) and, until it exits, checks history.csv every `interval` seconds and
samples the memory no more often than that and at most 1/`SAMPLE_DUTY` of the time
(reading the PSS of a process of a gigabyte or more takes tens of milliseconds, and a
sampler busy half the time slowed the very workers it measured: ResNet-18 rounds 12%
slower). It records

* memory: the sum over the run's processes of PSS (proportional set size: a shared page
  counts 1/k in each of the k processes mapping it, so the sum is what the run really
  occupies; RSS would count torch's libraries and Ray's object store once per process)
  and of USS (pages private to one process). The run's processes are the subprocess's
  descendants (driver, gcs_server, raylet, Ray workers, ...) plus any process carrying
  the run's `SIM_BENCH_TAG` environment variable, which catches Ray processes that were
  reparented to init; other people's Ray processes on the machine are never counted;
* start-up: "start to first round" is the time from launching the subprocess to the
  moment history.csv's round-0 row (the initial central evaluation, right before round
  1's messages go out) is written: imports, data cache, partition manifest, Ray start
  and the first central evaluation. Ray's worker start-up falls in round 1 (see
  `worker_startup_s` in `sim.bench.__main__`).

The history helpers read `history.csv` files: steady-state round time and the largest
relative difference between two runs' metric columns.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from sim.run.history import COLUMNS, STEADY_FROM_ROUND, TIME_COLUMNS, median_round_s, steady_rounds  # noqa: F401 (used by the bench modules)

log = logging.getLogger(__name__)

TAG_VARIABLE = "SIM_BENCH_TAG"
SAMPLE_DUTY = 20  # the next memory sample waits 20x this one's duration (~40 ms per 1.4 GB process)

METRIC_COLUMNS = [c for c in COLUMNS if c not in TIME_COLUMNS]


@dataclass
class HarnessRun:
    """What `run_harness` observed."""

    returncode: int
    wall_s: float  # launch to exit
    start_s: float  # launch to history.csv's round-0 row (nan if never written)
    peak_pss_mb: float  # max over samples of the summed PSS of the run's processes
    peak_uss_mb: float  # the same for USS
    peak_driver_pss_mb: float  # max over samples of the driver's own PSS (the `python -m sim` process)
    peak_driver_own_mb: float  # the same less shared memory (Ray's object store, which holds the data set)
    max_processes: int  # most processes seen in one sample
    workers: int | None  # clients running at once, from the run's summary.json
    log_path: Path
    helper_cpu: list[tuple[int, float]] = field(default_factory=list)  # `HelperCpu.readings`


def carries_tag(pid: int, tag: str) -> bool:
    """Whether process `pid` has `TAG_VARIABLE=tag` in its environment (False if unreadable)."""
    try:
        return psutil.Process(pid).environ().get(TAG_VARIABLE) == tag
    except psutil.Error:
        return False


def smaps_rollup(pid: int) -> dict[str, int]:
    """Process `pid`'s `/proc/<pid>/smaps_rollup` as {field: bytes}; {} if unreadable.

    psutil reads the same file for PSS and USS but does not expose `Pss_Shmem` (shared
    memory: tmpfs, memfd, Ray's object store). The driver writes the data set into Ray's
    object store, so its PSS carries those pages; the bench subtracts them to see what
    the driver itself holds.
    """
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except (OSError, ValueError):
        return {}
    return fields


def shared_memory_pss(pid: int) -> int:
    """Bytes of shared memory in process `pid`'s PSS (`Pss_Shmem`); 0 if unknown."""
    return smaps_rollup(pid).get("Pss_Shmem", 0)


class ProcessTreeMemory:
    """Samples the summed PSS/USS of one run's processes (see the module docstring)."""

    def __init__(self, root_pid: int, tag: str):
        self.root = psutil.Process(root_pid)
        self.tag = tag
        self._tagged: dict[tuple[int, float], bool] = {}  # (pid, create time) -> carries the tag
        self.peak_pss = self.peak_uss = self.peak_driver_pss = self.peak_driver_own = 0
        self.max_processes = 0

    def _is_tagged(self, proc: psutil.Process) -> bool:
        key = (proc.pid, proc.info["create_time"])
        if key not in self._tagged:
            self._tagged[key] = carries_tag(proc.pid, self.tag)
        return self._tagged[key]

    def processes(self) -> list[psutil.Process]:
        """The run's live processes: the root, its descendants and tagged processes."""
        found: dict[int, psutil.Process] = {}
        try:
            found[self.root.pid] = self.root
            for child in self.root.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            pass
        for proc in psutil.process_iter(["create_time"]):
            if proc.pid not in found and self._is_tagged(proc):
                found[proc.pid] = proc
        return list(found.values())

    def sample(self) -> None:
        """Add one sample: sum PSS and USS over the run's processes, keep the maxima."""
        pss = uss = count = 0
        for proc in self.processes():
            if proc.pid == self.root.pid and (rollup := smaps_rollup(proc.pid)):  # one read gives PSS and shmem
                proc_pss, proc_uss = rollup.get("Pss", 0), rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
                self.peak_driver_pss = max(self.peak_driver_pss, proc_pss)
                self.peak_driver_own = max(self.peak_driver_own, proc_pss - rollup.get("Pss_Shmem", 0))
            else:
                try:
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                proc_pss, proc_uss = info.pss, info.uss
            pss += proc_pss
            uss += proc_uss
            count += 1
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_uss = max(self.peak_uss, uss)
        self.max_processes = max(self.max_processes, count)


class HelperCpu:
    """CPU seconds of the processes the driver started outside Ray, read as history rows land.

    `readings` holds (history rows written, CPU s of the driver's descendants that are
    not Ray's: W&B's service process is one), read when a poll first sees that many rows.
    The difference of two readings is what those processes spent over the rounds between.
    """

    def __init__(self, root_pid: int):
        self.root = psutil.Process(root_pid)
        self.readings: list[tuple[int, float]] = []

    def read(self, rows: int) -> None:
        """Note the CPU times now, if `rows` is a new row count."""
        if self.readings and self.readings[-1][0] == rows:
            return
        spent = 0.0
        try:
            children = self.root.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            try:
                if "ray" not in " ".join(child.cmdline()).lower():
                    times = child.cpu_times()
                    spent += times.user + times.system
            except psutil.Error:
                continue
        self.readings.append((rows, spent))


def cpu_per_round_ms(readings: list[tuple[int, float]], first_round: int) -> float:
    """CPU ms per round over rounds >= `first_round` of `HelperCpu.readings` (nan when too few readings).

    Row r + 1 of history.csv is round r's, so the rounds from `first_round` to the last
    one seen lie between the readings at `first_round` rows (or the next one read) and at
    the most rows.
    """
    start = next((r for r in readings if r[0] >= first_round), None)
    end = readings[-1] if readings else None
    if start is None or end is None or end[0] <= start[0]:
        return math.nan
    return 1000 * (end[1] - start[1]) / (end[0] - start[0])


def _history_rows(path: Path) -> int:
    """Data rows written to a history.csv so far (0 when it does not exist yet)."""
    try:
        with path.open("rb") as f:
            return max(0, f.read().count(b"\n") - 1)
    except OSError:
        return 0


def run_harness(
    overrides: list[str], run_dir: Path, cwd: Path | None = None, interval: float = 0.2, timeout: float = 7200
) -> HarnessRun:
    """Run `python -m sim overrides hydra.run.dir=run_dir`, sampling as the module docstring says.

    The run's stdout and stderr go to `run_dir/../harness.log`. A run that outlives
    `timeout` seconds is killed (its process group) and reported with its return code.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = run_dir.parent / "harness.log"
    history = run_dir / "history.csv"
    tag = uuid.uuid4().hex
    env = {**os.environ, TAG_VARIABLE: tag, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "sim", *overrides, f"hydra.run.dir={run_dir}"]
    log.info("harness: %s", " ".join(command))
    with log_path.open("w") as out:
        launched = time.perf_counter()
        launched_wall = time.time()
        proc = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        memory = ProcessTreeMemory(proc.pid, tag)
        helpers = HelperCpu(proc.pid)
        start_s = math.nan
        next_sample = 0.0
        try:
            while proc.poll() is None:
                if time.perf_counter() >= next_sample:
                    sampled = time.perf_counter()
                    memory.sample()
                    next_sample = sampled + SAMPLE_DUTY * (time.perf_counter() - sampled)  # <= 1/SAMPLE_DUTY of a core
                rows = _history_rows(history)
                if rows:
                    helpers.read(rows)
                if math.isnan(start_s) and rows >= 1:
                    start_s = history.stat().st_mtime - launched_wall  # the row's write time, not the poll's
                if time.perf_counter() - launched > timeout:
                    log.error("harness run exceeded %.0f s; killing it", timeout)
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(interval)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
        wall_s = time.perf_counter() - launched
    # start_s stays nan if the run ended before any poll saw its round-0 row (the file's
    # mtime would then be a later row's).
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return HarnessRun(
        returncode=returncode,
        wall_s=wall_s,
        start_s=start_s,
        peak_pss_mb=memory.peak_pss / 2**20,
        peak_uss_mb=memory.peak_uss / 2**20,
        peak_driver_pss_mb=memory.peak_driver_pss / 2**20,
        peak_driver_own_mb=memory.peak_driver_own / 2**20,
        max_processes=memory.max_processes,
        workers=summary.get("clients_at_once"),
        log_path=log_path,
        helper_cpu=helpers.readings,
    )


def max_relative_difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Largest |a - b| / max(|a|, |b|) over the metric columns of two histories.

    Returns inf when the rounds or the pattern of empty cells differ.
    """
    if len(a) != len(b) or not (a["round"].to_numpy() == b["round"].to_numpy()).all():
        return math.inf
    worst = 0.0
    for column in METRIC_COLUMNS:
        x, y = a[column].to_numpy(dtype=float), b[column].to_numpy(dtype=float)
        if not (np.isnan(x) == np.isnan(y)).all():
            return math.inf
        keep = ~np.isnan(x)
        if keep.any():
            scale = np.maximum(np.maximum(np.abs(x[keep]), np.abs(y[keep])), 1e-12)
            worst = max(worst, float(np.max(np.abs(x[keep] - y[keep]) / scale)))
    return worst
