"""Experiment trackers (sim.tracking), in-process: the real trackers fed by hand, read back offline.

TensorBoard through its EventAccumulator, MLflow through MlflowClient, W&B through its
offline transaction log (`run-<id>.wandb`: W&B ships no Python reader for it, so the
framing is read by `sim.tracking.wandb_tracker.offline_records`, the records decoded
with W&B's own protobuf schema); readers in tests/helpers/trackers.py. No Ray.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers.trackers import assert_matches_history, mlflow_client
from helpers import compose_config
from sim.errors import ConfigError
from sim.run.history import HistoryWriter
from sim.tracking import STATE_FILE, Trackers, check_logger
from sim.tracking.base import RunInfo, Tracker
from sim.tracking.fanout import build_trackers, open_trackers
from sim.tracking.wandb_tracker import offline_files, offline_records as wandb_records

LOGGERS = ("none", "tensorboard", "mlflow", "wandb", "many")
ROWS = [  # history rows as RoundRecorder makes them (round 0: central evaluation only)
    {"round": 0, "central_loss": 2.31, "central_acc": 0.1, "round_s": 0.5, "elapsed_s": 0.5},
    *({"round": r, "train_clients": 3, "train_failures": 0, "eval_clients": 2, "eval_failures": 0,
       "train_loss": 2.0 / r, "fed_eval_loss": 2.1 / r, "fed_eval_acc": 0.1 * r, "central_loss": 2.2 / r,
       "central_acc": 0.1 + 0.05 * r, "round_s": 0.25 + r / 1000, "elapsed_s": 0.5 + r} for r in range(1, 6)),
]


# --- readers: each library's own -------------------------------------------------------------


def tensorboard_hparams(log_dir: Path) -> dict[str, object]:
    """The hyper-parameters of the run's HParams session (TensorBoard's reader and proto)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    for content in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            hparams = data.session_start_info.hparams
            return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in hparams.items()}
    return {}


# --- config and validation --------------------------------------------------------------------

@pytest.mark.parametrize("logger", [*LOGGERS, "[tensorboard,wandb]"])
def test_every_logger_option_composes_and_builds(logger):
    cfg = compose_config([f"logger={logger}"])
    trackers = build_trackers(cfg.logger)
    expected = {"none": set(), "many": {"tensorboard", "mlflow", "wandb"},
                "[tensorboard,wandb]": {"tensorboard", "wandb"}}.get(logger, {logger})
    assert set(trackers) == expected and all(isinstance(t, Tracker) for t in trackers.values())
    check_logger(cfg)  # every package is installed here: nothing refused


def test_wandb_is_offline_unless_told(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert compose_config(["logger=wandb"]).logger.wandb.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "")
    assert compose_config(["logger=wandb"]).logger.wandb.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert compose_config(["logger=wandb"]).logger.wandb.mode == "online"
    assert compose_config(["logger=wandb", "logger.wandb.mode=offline"]).logger.wandb.mode == "offline"


@pytest.mark.parametrize("override,key", [
    ("logger.wandb.mode=sometimes", "logger.wandb.mode"), ("logger.mlflow.tracking_uri=''", "logger.mlflow.tracking_uri"),
    ("logger.tensorboard.images=2", "logger.tensorboard.images"),
    ("logger.wandb._target_=sim.tracking.nothing.Here", "logger.wandb._target_"),
])
def test_bad_logger_setting_names_its_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}="):
        check_logger(compose_config(["logger=many", override]))


def test_missing_package_is_one_line_naming_the_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError) as info:
        check_logger(compose_config(["logger=[tensorboard,mlflow]"]))
    assert str(info.value) == ("logger=mlflow needs the mlflow package, which is not installed: "
                               "run pip install -e '.[mlflow]' (or pip install mlflow)")


# --- the fan-out: faults and resume, with a deliberately failing backend ----------------------

class Recording(Tracker):
    """A tracker that keeps what it is given; `fail_at` makes log_round raise at that step."""

    def __init__(self, fail_at: int | None = None, hang: threading.Event | None = None):
        self.rounds, self.finished, self.fail_at, self.hang = [], None, fail_at, hang

    def log_round(self, step, metrics):
        if self.hang is not None:
            self.hang.wait()
        if step == self.fail_at:
            raise OSError(28, "No space left on device")
        self.rounds.append((step, dict(metrics)))

    def finish(self, status):
        self.finished = status


def test_failing_tracker_costs_one_warning_and_the_others_go_on(tmp_path, caplog):
    broken, healthy = Recording(fail_at=2), Recording()
    trackers = Trackers({"broken": broken, "healthy": healthy}, tmp_path / STATE_FILE)
    trackers.start(RunInfo(tmp_path, "run"))
    with caplog.at_level(logging.WARNING, logger="sim.tracking.fanout"):
        for row in ROWS:
            trackers.log_round(row)
        trackers.close("FINISHED")
    assert [s for s, _ in healthy.rounds] == [0, 1, 2, 3, 4, 5] and healthy.finished == "FINISHED"
    assert [s for s, _ in broken.rounds] == [0, 1] and broken.finished is None  # dropped at round 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("broken tracker failed") and "No space left" in warnings[0]
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["broken"]["last_round"] == 1 and state["healthy"]["last_round"] == 5
    assert healthy.rounds[0][1] == {"central_loss": 2.31, "central_acc": 0.1, "round_s": 0.5, "elapsed_s": 0.5}


def test_close_does_not_wait_forever_for_a_hanging_tracker(tmp_path, caplog):
    release = threading.Event()
    trackers = Trackers({"stuck": Recording(hang=release)}, tmp_path / STATE_FILE)
    trackers.log_round(ROWS[0])
    with caplog.at_level(logging.WARNING, logger="sim.tracking.fanout"):
        trackers.close("FINISHED", timeout=0.5)
    release.set()
    assert any("stuck still busy" in r.getMessage() for r in caplog.records)


def test_resume_logs_each_round_once_and_replays_missed_rounds(tmp_path):
    first = Recording()
    trackers = Trackers({"t": first}, tmp_path / STATE_FILE)
    for row in ROWS[:3]:
        trackers.log_round(row)
    trackers.close("KILLED")
    history = tmp_path / "history.csv"
    writer = HistoryWriter(history)
    for row in ROWS[:4]:  # round 3 reached history.csv, but not the tracker (the process was killed)
        writer.append(row)
    again = Recording()
    trackers = Trackers({"t": again}, tmp_path / STATE_FILE)
    trackers.replay(history)
    for row in ROWS[2:]:  # a resume from the checkpoint of round 1 redoes rounds 2..5
        trackers.log_round(row)
    trackers.close("FINISHED")
    assert [s for s, _ in first.rounds] + [s for s, _ in again.rounds] == [0, 1, 2, 3, 4, 5]


def test_real_trackers_read_back_and_resume_without_duplicates(tmp_path, monkeypatch):
    """TensorBoard, MLflow and W&B in-process: a run cut after round 2, resumed to round 5."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_config(["logger=many", "logger.tensorboard.images=false"])
    run_dir = tmp_path / "results" / "run"
    run_dir.mkdir(parents=True)
    history = HistoryWriter(run_dir / "history.csv")
    with pytest.raises(KeyboardInterrupt):
        with open_trackers(cfg, run_dir, resume=False) as trackers:
            for row in ROWS[:3]:
                history.append(row)
                trackers.log_round(row)
            raise KeyboardInterrupt
    state = json.loads((run_dir / STATE_FILE).read_text())
    assert {k: v["last_round"] for k, v in state.items()} == {"tensorboard": 2, "mlflow": 2, "wandb": 2}
    client = mlflow_client(state["mlflow"]["tracking_uri"])
    assert client.get_run(state["mlflow"]["run_id"]).info.status == "KILLED"

    history.truncate_after(1)  # the checkpoint was of round 1: rounds 2.. are done again
    with open_trackers(cfg, run_dir, resume=True) as trackers:
        trackers.replay(run_dir / "history.csv")
        for row in ROWS[2:]:
            history.append(row)
            trackers.log_round(row)
        trackers.log_summary({"rounds": 5, "final_central_acc": 0.35, "partition_manifest": None},
                             [run_dir / "history.csv"])
    resumed = json.loads((run_dir / STATE_FILE).read_text())
    assert all(resumed[k]["run_id"] == state[k]["run_id"] for k in ("mlflow", "wandb"))  # the same runs
    assert_matches_history(run_dir, pd.read_csv(run_dir / "history.csv"), resumed)
    run = client.get_run(state["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["seed"] == "0"
    assert run.data.metrics["final_central_acc"] == 0.35
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["history.csv"]
    assert tensorboard_hparams(Path(resumed["tensorboard"]["log_dir"]))["num_clients"] == 100
    segments = offline_files(run_dir, state["wandb"]["run_id"])
    assert len(segments) == 2  # W&B offline: one folder per process, one run id
    config = [r.config for r in wandb_records(run_dir, state["wandb"]["run_id"]) if r.HasField("config")]
    assert any(u.key == "num_clients" and u.value_json == "100" for c in config for u in c.update)


def test_wandb_offline_files_include_a_resume_within_the_same_second(tmp_path):
    """W&B adds `-1`, `-2`, ... to a run's folder started in the same second as another of that run."""
    names = ["offline-run-20261129_125022-ab12-1", "offline-run-20261129_125022-ab12",
             "offline-run-20261129_125023-ab12", "offline-run-20261129_125022-ab12-10",
             "offline-run-20261129_125022-ab12-2", "offline-run-20261129_125022-ab123"]  # the last: another run
    for name in names:
        folder = tmp_path / "wandb" / name
        folder.mkdir(parents=True)
        (folder / f"run-{name.split('-')[3]}.wandb").write_bytes(b":W&B")
    assert [p.parent.name for p in offline_files(tmp_path, "ab12")] == [
        "offline-run-20261129_125022-ab12", "offline-run-20261129_125022-ab12-1",
        "offline-run-20261129_125022-ab12-2", "offline-run-20261129_125022-ab12-10",
        "offline-run-20261129_125023-ab12"]


class SlowStart(Recording):
    """A tracker whose start-up lasts until `release` is set (W&B's takes seconds)."""

    def __init__(self, release: threading.Event):
        super().__init__()
        self.release = release

    def start(self, info, state):
        self.release.wait(10)


def test_the_state_says_which_rounds_ran_beside_a_trackers_start_up(tmp_path):
    """sim.bench.trackers times only the rounds after it: a start-up is not a cost per round."""
    release = threading.Event()
    trackers = Trackers({"slow": SlowStart(release)}, tmp_path / STATE_FILE)
    trackers.start(RunInfo(tmp_path, "run"))
    for row in ROWS[:3]:  # rounds 0-2 end while the tracker is still starting
        trackers.log_round(row)
    release.set()
    deadline = time.monotonic() + 10
    while not (tmp_path / STATE_FILE).exists() and time.monotonic() < deadline:  # written once start is done
        time.sleep(0.01)
    for row in ROWS[3:]:
        trackers.log_round(row)
    trackers.close("FINISHED")
    assert json.loads((tmp_path / STATE_FILE).read_text())["slow"]["ready_after_round"] == 2


class Busy(Recording):
    """A tracker that computes for a while per round, then sleeps as long (a write that waits on the disk)."""

    def log_round(self, step, metrics):
        started = time.thread_time()
        while time.thread_time() - started < 0.02:
            pass
        time.sleep(0.02)


def test_the_state_keeps_the_time_and_the_cpu_each_kind_of_event_took(tmp_path):
    """sim.bench.trackers reads both: wall time in the calls, and the CPU the trackers' thread spent there."""
    trackers = Trackers({"busy": Busy()}, tmp_path / STATE_FILE)
    trackers.start(RunInfo(tmp_path, "run"))
    for row in ROWS[:3]:
        trackers.log_round(row)
    trackers.close("FINISHED")
    state = json.loads((tmp_path / STATE_FILE).read_text())["busy"]
    assert state["cpu_seconds"]["round"] >= 0.06  # 3 rounds of 20 ms computing
    assert state["seconds"]["round"] >= state["cpu_seconds"]["round"] + 0.06  # and 20 ms sleeping each
