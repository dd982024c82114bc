"""Experiment trackers (sim.tracking): read back with each library's own reader, offline.

TensorBoard through its EventAccumulator, MLflow through MlflowClient, W&B through its
offline transaction log (`run-<id>.wandb`: W&B ships no Python reader for it, so the
framing is read by `sim.tracking.wandb_tracker.offline_records`, the records decoded
with W&B's own protobuf schema). Unit
tests drive the real trackers in-process (no Ray); the slow ones run `python -m sim`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY, compose_config, run_cli, run_dirs
from sim.errors import ConfigError
from sim.run.history import COLUMNS, HistoryWriter
from sim.tracking import STATE_FILE, Trackers, check_logger
from sim.tracking.base import RunInfo, Tracker
from sim.tracking.fanout import build_trackers, open_trackers
from sim.tracking.wandb_tracker import offline_history as wandb_history
from sim.tracking.wandb_tracker import offline_records as wandb_records

LOGGERS = ("none", "tensorboard", "mlflow", "wandb", "many")
METRICS = [c for c in COLUMNS if c != "round"]
ROWS = [  # history rows as RoundRecorder makes them (round 0: central evaluation only)
    {"round": 0, "central_loss": 2.31, "central_acc": 0.1, "round_s": 0.5, "elapsed_s": 0.5},
    *({"round": r, "train_clients": 3, "train_failures": 0, "eval_clients": 2, "eval_failures": 0,
       "train_loss": 2.0 / r, "fed_eval_loss": 2.1 / r, "fed_eval_acc": 0.1 * r, "central_loss": 2.2 / r,
       "central_acc": 0.1 + 0.05 * r, "round_s": 0.25 + r / 1000, "elapsed_s": 0.5 + r} for r in range(1, 6)),
]


# --- readers: each library's own -------------------------------------------------------------

def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every event file in `log_dir` (TensorBoard's reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


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


def mlflow_client(uri: str):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def expected_points(history: pd.DataFrame) -> dict[str, list[tuple[int, float]]]:
    """{column: [(round, value)]} of every non-empty history cell (round excluded: it is the step)."""
    return {c: [(int(r), float(v)) for r, v in zip(history["round"], history[c]) if pd.notna(v)] for c in METRICS}


def assert_matches_history(run_dir: Path, history: pd.DataFrame, state: dict) -> None:
    """Each tracker in `state` holds every history cell once, at its round."""
    expected = {k: v for k, v in expected_points(history).items() if v}
    if "tensorboard" in state:
        scalars = tensorboard_scalars(Path(state["tensorboard"]["log_dir"]))
        for column, points in expected.items():
            assert [s for s, _ in scalars[column]] == [s for s, _ in points], column
            assert [v for _, v in scalars[column]] == pytest.approx([v for _, v in points], rel=1e-6), column
    if "mlflow" in state:
        client, run_id = mlflow_client(state["mlflow"]["tracking_uri"]), state["mlflow"]["run_id"]
        for column, points in expected.items():
            got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, column))
            assert got == points, column  # exact floats, one value per step
    if "wandb" in state:
        logged = wandb_history(run_dir, state["wandb"]["run_id"])
        assert [step for step, _ in logged] == history["round"].tolist()
        for column, points in expected.items():
            assert [(s, row[column]) for s, row in logged if column in row] == points, column


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


@pytest.mark.slow
def test_cli_refuses_missing_package_before_any_work(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['wandb'] = None  # as if not installed\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])}
    result = run_cli([*TINY, "logger=wandb"], cwd=tmp_path, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: logger=wandb needs the wandb package, which is not installed: "
        "run pip install -e '.[wandb]' (or pip install wandb)"]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.*"))


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
    segments = sorted((run_dir / "wandb").glob(f"offline-run-*-{state['wandb']['run_id']}"))
    assert len(segments) == 2  # W&B offline: one folder per process, one run id
    config = [r.config for r in wandb_records(run_dir, state["wandb"]["run_id"]) if r.HasField("config")]
    assert any(u.key == "num_clients" and u.value_json == "100" for c in config for u in c.update)


# --- end to end: python -m sim ------------------------------------------------------------------

@pytest.mark.slow
def test_sweep_logs_one_tracker_run_per_job_grouped_by_sweep(tmp_path, data_dir, monkeypatch):
    """`-m seed=0,1 logger=many`: each job read back equals its history.csv; the jobs share a group."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    monkeypatch.delenv("WANDB_MODE", raising=False)  # W&B's default: offline
    result = run_cli(["-m", *TINY, f"dataset.data_dir={data_dir}", "seed=0,1", "logger=many"], cwd=tmp_path,
                     timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = run_dirs(tmp_path)
    assert len(jobs) == 2
    sweep_dir = jobs[0].parent
    group = sweep_dir.relative_to(tmp_path / "results").as_posix()  # multirun/<date>/<time>
    states = [json.loads((job / STATE_FILE).read_text()) for job in jobs]
    for job, state in zip(jobs, states):
        history = pd.read_csv(job / "history.csv")
        assert history["round"].tolist() == [0, 1, 2]
        assert_matches_history(job, history, state)
        assert state["wandb"]["group"] == group and state["mlflow"]["parent_run_id"] is not None
    # TensorBoard: one run per job folder under the sweep
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(sweep_dir))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == ["0/tensorboard", "1/tensorboard"]
    assert all("curves" in multiplexer.GetAccumulator(run).Tags()["images"] for run in multiplexer.Runs())
    # MLflow: both jobs are children of the sweep's one parent run, with params, summary and plots
    client = mlflow_client(states[0]["mlflow"]["tracking_uri"])
    parent = states[0]["mlflow"]["parent_run_id"]
    assert states[1]["mlflow"]["parent_run_id"] == parent
    children = client.search_runs([states[0]["mlflow"]["experiment_id"]],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1"]
    for job, state in zip(jobs, states):
        run = client.get_run(state["mlflow"]["run_id"])
        summary = json.loads((job / "summary.json").read_text())
        assert run.info.status == "FINISHED" and run.data.metrics["final_central_acc"] == summary["final_central_acc"]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"curves.png", "summary.json"} <= artifacts and any(a.endswith("_labels.png") for a in artifacts)
        # W&B: the run record carries the sweep as its group; summary and results artifact logged
        records = list(wandb_records(job, state["wandb"]["run_id"]))
        assert [r.run.run_group for r in records if r.HasField("run")] == [group]
        assert any(r.HasField("artifact") and r.artifact.type == "results" for r in records)
        assert any(u.key == "final_central_acc" for r in records if r.HasField("summary") for u in r.summary.update)


@pytest.mark.slow
def test_failing_tracker_costs_a_warning_not_the_run(tmp_path, data_dir):
    """MLflow pointed into a regular file (it cannot create its store): TensorBoard and the run go on."""
    (tmp_path / "not-a-dir").write_text("a file where MLflow's store should go\n")
    result = run_cli([*TINY, f"dataset.data_dir={data_dir}", "logger=[tensorboard,mlflow]",
                      "logger.mlflow.tracking_uri=not-a-dir/mlruns"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mlflow tracker failed and is off for the rest of this run" in result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path)
    history = pd.read_csv(run_dir / "history.csv")
    assert history["round"].tolist() == [0, 1, 2] and history["central_acc"].notna().all()
    state = json.loads((run_dir / STATE_FILE).read_text())
    assert state["tensorboard"]["last_round"] == 2 and "run_id" not in state["mlflow"]
    assert_matches_history(run_dir, history, {"tensorboard": state["tensorboard"]})


@pytest.mark.slow
def test_resume_continues_the_same_tracker_runs_without_duplicate_steps(tmp_path, data_dir, monkeypatch):
    """Ctrl-C after round 2 of 5, then resume=: every tracker holds rounds 0..5 once, in one run."""
    import signal

    monkeypatch.delenv("WANDB_MODE", raising=False)
    from test_resume import interrupt_at_round

    args = [*TINY, f"dataset.data_dir={data_dir}", "num_rounds=5", "logger=many"]
    returncode, run_dir, _ = interrupt_at_round(tmp_path, args, signal.SIGINT, 2)
    assert returncode == 130
    before = json.loads((run_dir / STATE_FILE).read_text())
    result = run_cli([f"resume={run_dir}"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    after = json.loads((run_dir / STATE_FILE).read_text())
    assert all(after[k]["run_id"] == before[k]["run_id"] for k in ("mlflow", "wandb"))
    history = pd.read_csv(run_dir / "history.csv")
    assert history["round"].tolist() == [0, 1, 2, 3, 4, 5]
    assert_matches_history(run_dir, history, after)
