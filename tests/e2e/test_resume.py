"""SIGTERM or SIGKILL mid-run, then `resume=`: the final history equals an uninterrupted run's."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest

from helpers import TINY, interrupt_at_round, processes_started_by, run_cli, run_dirs, still_alive
from sim.run.checkpoint import load_checkpoint
from sim.run.history import COLUMNS, TIME_COLUMNS

pytestmark = pytest.mark.slow
METRICS = [c for c in COLUMNS if c not in TIME_COLUMNS]
ARGS = [*TINY, "num_rounds=8", "strategy=fedadam",  # FedAdam: server state that must survive
        "resources.ray_cpus=1"]  # a private Ray (its processes are checked) of one client worker


@pytest.fixture(scope="module")
def straight_history(tmp_path_factory, data_dir) -> pd.DataFrame:
    """The history of an uninterrupted run of ARGS: what every resumed run must end with."""
    straight = tmp_path_factory.mktemp("straight")
    result = run_cli([*ARGS, f"dataset.data_dir={data_dir}"], cwd=straight, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (straight_dir,) = run_dirs(straight)
    return pd.read_csv(straight_dir / "history.csv")[METRICS]


def test_resume_after_sigterm_equals_uninterrupted_run(tmp_path, data_dir, straight_history):
    """SIGTERM mid-run: exit 143, whole rows kept, Ray stopped; `resume=` then ends as the straight run.

    (Ctrl-C, SIGINT, takes the same path: see tests/e2e/test_algorithms_e2e.py and test_tracking_e2e.py.)
    """
    args = [*ARGS, f"dataset.data_dir={data_dir}"]
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    returncode, run_dir, started = interrupt_at_round(resumed, args, signal.SIGTERM, 4)
    assert returncode == 143
    assert still_alive(started) == []
    partial = pd.read_csv(run_dir / "history.csv")  # valid CSV, whole rows
    assert partial["round"].tolist() == list(range(len(partial))) and len(partial) >= 5
    assert partial["central_acc"].notna().all()
    config_before = (run_dir / ".hydra" / "config.yaml").read_text()
    result = run_cli([f"resume={run_dir}"], cwd=resumed)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert run_dirs(resumed) == [run_dir]  # continued in place, no new run directory
    assert (run_dir / ".hydra" / "config.yaml").read_text() == config_before

    got = pd.read_csv(run_dir / "history.csv")[METRICS]
    pd.testing.assert_frame_equal(got, straight_history)


def test_resume_after_sigkill_with_checkpoint_every_3_equals_uninterrupted_run(tmp_path, data_dir, straight_history):
    """SIGKILL (no handler runs) after round 4, checkpoints every 3 rounds: resume redoes round 4 from round 3's."""
    proc = subprocess.Popen([sys.executable, "-m", "sim", *ARGS, f"dataset.data_dir={data_dir}", "checkpoint_every=3"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            found = run_dirs(tmp_path)
            if found and len((found[0] / "history.csv").read_text().splitlines()) >= 4 + 2:  # header, rounds 0..4
                break
            time.sleep(0.05)
        started = processes_started_by(proc.pid)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        for child in started:  # SIGKILL leaves the private Ray behind: stop it by pid
            with contextlib.suppress(psutil.Error):
                child.kill()
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = run_dirs(tmp_path)
    killed = pd.read_csv(run_dir / "history.csv")
    checkpointed = load_checkpoint(run_dir)["round"]
    assert checkpointed % 3 == 0 and checkpointed < killed["round"].max() < 8, (checkpointed, killed["round"].max())
    result = run_cli([f"resume={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "resuming after round " + str(checkpointed) in result.stdout + result.stderr
    got = pd.read_csv(run_dir / "history.csv")[METRICS]
    pd.testing.assert_frame_equal(got, straight_history)
    assert still_alive(started) == []


def test_resume_of_a_missing_run_dir_is_refused(tmp_path):
    result = run_cli([f"resume={tmp_path / 'nope'}"], cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "resume=" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _ctrl_c_reaches_python():
    """A terminal's Ctrl-C: Python ignores SIGINT for good if it starts with SIGINT ignored (a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_loading_data_leaves_nothing_behind(tmp_path, cifar10_archive):
    """Before Ray starts a Ctrl-C ends the run at once: one line, exit 130, no run directory."""
    fresh = tmp_path / "data"  # decoding the archive afresh takes seconds: the window for the signal
    proc = subprocess.Popen([sys.executable, "-u", "-m", "sim", f"dataset.path={cifar10_archive}",
                             f"dataset.data_dir={fresh}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ctrl_c_reaches_python)
    try:
        for line in proc.stdout:
            if "run directory:" in line:
                break
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted by SIGINT outside the training rounds" in output and "Traceback" not in output
    assert run_dirs(tmp_path) == [] and not list((tmp_path / "results").rglob("config.yaml"))
    assert not list(fresh.rglob("*.npy"))  # no half-written cache file was kept
