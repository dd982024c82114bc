"""Feed every configured tracker from one background thread; a failing tracker costs a warning.

    with open_trackers(cfg, run_dir, resume) as trackers:   # cfg.logger: {name: {_target_: ...}}
        trackers.log_round(row)                  # a history.csv row, as the round ends
        trackers.log_summary(summary, files)     # at the end

The training loop only puts events on a queue (microseconds); one daemon thread hands
them to the trackers in order. A tracker that raises (disk full, unreachable server) is
dropped with one warning; the others, the run and history.csv go on. `trackers.json` in
the run directory keeps each tracker's state (its run id, the last round it logged), so
`resume=` reopens the same tracker run and logs each round once: rounds a tracker already
has are skipped, rounds it missed (an interrupted run's last rows, a tracker that had
failed) are replayed from history.csv.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from sim.tracking.base import RunInfo, Tracker, flatten

log = logging.getLogger(__name__)
STATE_FILE = "trackers.json"
CLOSE_TIMEOUT_S = 60.0  # longest wait at the end for trackers to write what is queued
RESULTS_DIR = Path("results")  # run names are run directories relative to it


class Trackers:
    """Fan-out of `trackers` ({name: Tracker}) behind a queue and one daemon thread."""

    def __init__(self, trackers: Mapping[str, Tracker], state_path: Path | None = None):
        self._trackers = dict(trackers)
        self._state_path = state_path
        self._state: dict[str, dict[str, Any]] = _read_state(state_path)
        self._queue: queue.Queue = queue.Queue()
        self._busy: str | None = None  # the tracker being called now (named when close times out)
        self._state_warned = False
        self._last_ended = -1  # newest round handed to log_round (the training loop's progress)
        self._thread: threading.Thread | None = None
        if self._trackers:
            self._thread = threading.Thread(target=self._work, name="sim-trackers", daemon=True)
            self._thread.start()

    def __bool__(self) -> bool:
        return bool(self._trackers)

    @property
    def names(self) -> list[str]:
        """The trackers still running (a failed one is dropped)."""
        return list(self._trackers)

    @property
    def state(self) -> dict[str, dict[str, Any]]:
        """Each tracker's saved state (run id, last round logged, seconds and thread CPU seconds spent
        per kind of event, `ready_after_round`: the newest round that had ended when its start-up finished)."""
        return self._state

    def start(self, info: RunInfo) -> None:
        """Open every tracker's run; log the config unless this tracker logged it before."""
        self._put("start", info)

    def log_round(self, row: Mapping[str, Any]) -> None:
        """One history.csv row (a dict with `round`); empty and NaN cells are left out."""
        metrics = {k: float(v) for k, v in row.items() if k != "round" and _is_number(v)}
        self._last_ended = max(self._last_ended, int(row["round"]))
        self._put("round", (int(row["round"]), metrics))

    def replay(self, history_csv: Path) -> None:
        """Offer every row of `history_csv`; trackers skip the rounds they have."""
        if not self or not Path(history_csv).exists():
            return
        import pandas as pd

        for row in pd.read_csv(history_csv).to_dict("records"):
            self.log_round(row)

    def log_summary(self, summary: Mapping[str, Any], files: list[Path]) -> None:
        """summary.json's figures and the run's plots (each tracker logs them once)."""
        self._put("summary", (dict(summary), [Path(f) for f in files if f and Path(f).exists()]))

    def close(self, status: str = "FINISHED", timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Finish every tracker's run with `status`; wait at most `timeout` s for the queue."""
        if self._thread is None:
            return
        self._put("finish", status)
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("tracker %s still busy after %.0f s; leaving it (history.csv is complete)",
                        self._busy, timeout)
        self._thread = None

    def _put(self, kind: str, payload: Any) -> None:
        if self._thread is not None:
            self._queue.put((kind, payload))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            kind, payload = item
            changed = False
            for name in list(self._trackers):
                changed |= self._call(name, kind, payload)
            if changed:
                self._save_state()

    def _call(self, name: str, kind: str, payload: Any) -> bool:
        """Hand one event to one tracker; drop the tracker if it raises. True if its state changed."""
        tracker, state = self._trackers[name], self._state.setdefault(name, {})
        self._busy, started, cpu_started = name, time.perf_counter(), time.thread_time()
        try:
            if kind == "start":
                held = tracker.start(payload, state)
                if held is not None:  # a reopened run: trust its store over what was noted as sent
                    state["last_round"] = held
                if not state.get("params_logged"):
                    tracker.log_params(flatten(payload.config), payload.overrides)
                    state["params_logged"] = True
                state["ready_after_round"] = self._last_ended  # rounds up to here ran beside its start-up
            elif kind == "round":
                step, metrics = payload
                if step <= state.get("last_round", -1):
                    return False
                tracker.log_round(step, metrics)
                tracker.flush()
                state["last_round"] = step
            elif kind == "summary" and not state.get("summary_logged"):
                tracker.log_summary(*payload)
                tracker.flush()
                state["summary_logged"] = True
            elif kind == "finish":
                tracker.finish(payload)
        except Exception as exc:  # noqa: BLE001 - any tracker fault costs a warning, never the run
            del self._trackers[name]
            first = " | ".join(line.strip() for line in str(exc).strip().splitlines()[:3])[:300]
            log.warning("%s tracker failed and is off for the rest of this run (%s: %s); history.csv is "
                        "unaffected, and resume= replays the rounds it missed", name, type(exc).__name__, first)
        finally:
            seconds = state.setdefault("seconds", {})  # time spent in the tracker per kind of event
            seconds[kind] = round(seconds.get(kind, 0.0) + time.perf_counter() - started, 6)
            cpu = state.setdefault("cpu_seconds", {})  # the CPU this thread spent in it, the same way
            cpu[kind] = round(cpu.get(kind, 0.0) + time.thread_time() - cpu_started, 6)
            self._busy = None
        return True

    def _save_state(self) -> None:
        if self._state_path is None:
            return
        try:
            tmp = self._state_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self._state, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self._state_path)
        except OSError as exc:
            if not self._state_warned:
                self._state_warned = True
                log.warning("cannot write %s (%s): a resume would log rounds again", self._state_path, exc)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_state(path: Path | None) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(path.read_text()) if path is not None and path.exists() else {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s): trackers start new runs", path, exc)
        return {}


def _relative_name(path: Path) -> str:
    """`results/2026-11-28/12-00-00` -> `2026-11-28/12-00-00` (else the path as given)."""
    try:
        return Path(path).resolve().relative_to(RESULTS_DIR.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def run_info(cfg, run_dir: Path, resume: bool) -> RunInfo:
    """The RunInfo of this run: its config, overrides and, in a multirun, its sweep and job number."""
    from omegaconf import OmegaConf

    overrides: list[str] = []
    group = job = None
    saved = Path(run_dir) / ".hydra" / "overrides.yaml"
    if saved.exists():
        overrides = [str(o) for o in OmegaConf.load(saved)]
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if not saved.exists() and not resume:
            overrides = list(hydra_cfg.overrides.task)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            group, job = _relative_name(Path(hydra_cfg.sweep.dir)), int(hydra_cfg.job.num)
    except ValueError:  # not inside a Hydra job (a direct call of sim.run.recipe.run)
        pass
    config = OmegaConf.to_container(cfg, resolve=True)
    return RunInfo(Path(run_dir), _relative_name(run_dir), config, tuple(overrides), group, job, resume)


def build_trackers(logger_cfg) -> dict[str, Tracker]:
    """{name: Tracker} from `cfg.logger` (`{}` or None: no trackers)."""
    from hydra.utils import instantiate

    return {str(name): instantiate(node) for name, node in (logger_cfg or {}).items()}


@contextmanager
def open_trackers(cfg, run_dir: Path, resume: bool) -> Iterator[Trackers]:
    """The run's trackers, started; finished on exit (FAILED on an error, KILLED on Ctrl-C)."""
    trackers = Trackers(build_trackers(cfg.get("logger")), Path(run_dir) / STATE_FILE)
    if trackers:
        log.info("trackers: %s", ", ".join(trackers.names))
        trackers.start(run_info(cfg, run_dir, resume))
    status = "FAILED"
    try:
        yield trackers
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        trackers.close(status)
