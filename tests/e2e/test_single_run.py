"""End-to-end runs of `python -m sim` in a subprocess, on small settings.

Real Flower, real Ray, real torch: nothing is mocked. The tiny runs attach to the test worker's Ray cluster; the rest start their own.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
import pytest

from helpers import TINY, processes_started_by, run_cli, run_dirs, sweep_run_dirs
from sim.run.history import COLUMNS, TIME_COLUMNS

pytestmark = pytest.mark.slow
METRICS = [c for c in COLUMNS if c not in TIME_COLUMNS]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, data_dir, ray_cluster_address):
    """Tiny runs: "a" seed 0; "c" seed 1 with both evaluations off (the smoke experiment:
    TINY's settings as a preset); then one sweep of two jobs, "d" seed 0 with one client
    per message and "b" seed 0 again, which runs on the Ray worker "d" left (a sweep's jobs
    share Ray and its idle workers).

    They attach to one running Ray cluster (saves a Ray start each); the other tests of
    this module start their own private Ray, as a plain `python -m sim` does.
    """
    common = [f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}"]
    runs = {}
    no_eval = ["experiment=smoke", "seed=1", "eval_clients_per_round=0", "central_eval_every=0"]
    for name, args in (("a", [*TINY, "seed=0"]), ("c", no_eval),
                       ("d,b", ["-m", *TINY, "seed=0", "strategy.packable=false,true"])):
        cwd = tmp_path_factory.mktemp(f"run_{name}")
        result = run_cli([*args, *common], cwd=cwd)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        for key, run_dir in zip(name.split(","), sweep_run_dirs(cwd) if "-m" in args else run_dirs(cwd)):
            runs[key] = (run_dir, result)
    return runs


def test_run_writes_history_summary_curves_and_config(tiny_runs):
    run_dir, result = tiny_runs["a"]
    history = pd.read_csv(run_dir / "history.csv")
    assert tuple(history.columns) == COLUMNS
    assert history["round"].tolist() == [0, 1, 2]
    assert history.loc[0, ["train_clients", "train_loss"]].isna().all()
    assert history.loc[1:, "train_clients"].tolist() == [3, 3]
    assert history.loc[1:, "eval_clients"].tolist() == [2, 2]
    assert (history.loc[1:, "train_failures"] == 0).all()
    assert history["central_acc"].between(0, 1).all() and history["central_acc"].notna().all()
    assert (history["elapsed_s"].diff().dropna() > 0).all()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 2
    assert summary["final_central_acc"] == pytest.approx(history["central_acc"].iloc[-1])
    assert summary["partition_manifest"].endswith(".npz")
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / ".hydra" / "config.yaml").exists()
    # the run directory is announced at the start and the end
    assert result.stdout.count(str(run_dir.relative_to(run_dir.parents[2]))) >= 2 or str(run_dir) in result.stdout


def test_same_seed_same_history_other_seed_differs(tiny_runs):
    """Also on a Ray worker kept from a sweep's previous job ("b"): the history of a fresh one ("a")."""
    a, b, c = (pd.read_csv(tiny_runs[k][0] / "history.csv")[METRICS] for k in "abc")
    sweep_output = tiny_runs["b"][1].stdout + tiny_runs["b"][1].stderr
    assert sweep_output.count("Ray kept from the previous job, with 1 idle worker(s)") == 1, sweep_output[-3000:]
    pd.testing.assert_frame_equal(a, b)
    assert a["train_loss"].notna().sum() == c["train_loss"].notna().sum() == 2
    assert not np.allclose(a["train_loss"].iloc[1:], c["train_loss"].iloc[1:])


def test_packing_clients_changes_only_the_order_of_float_sums(tiny_runs):
    packed = pd.read_csv(tiny_runs["a"][0] / "history.csv")[METRICS]
    one_per_message = pd.read_csv(tiny_runs["d"][0] / "history.csv")[METRICS]
    pd.testing.assert_frame_equal(packed, one_per_message, check_exact=False, rtol=1e-5, atol=1e-7)


def test_library_logs_stay_quiet(tiny_runs):
    _, result = tiny_runs["a"]
    output = result.stdout + result.stderr
    assert "INFO" not in "".join(line for line in output.splitlines() if "[flwr]" in line or "ray" in line.lower())
    assert "DEPRECATED" not in output


def test_federated_eval_and_central_eval_can_be_turned_off(tiny_runs):
    run_dir, _ = tiny_runs["c"]
    history = pd.read_csv(run_dir / "history.csv")
    assert history["round"].tolist() == [0, 1, 2]
    assert history[["eval_clients", "fed_eval_acc", "central_acc"]].isna().all().all()
    assert history.loc[1:, "train_loss"].notna().all()
    assert json.loads((run_dir / "summary.json").read_text())["final_central_acc"] is None


def test_killed_run_keeps_every_finished_round(tmp_path, data_dir):
    args = [*TINY, "num_rounds=200", f"dataset.data_dir={data_dir}", "resources.ray_cpus=1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    started = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            found = run_dirs(tmp_path)
            if found and len((found[0] / "history.csv").read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        started = processes_started_by(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    for orphan in started:  # Ray's agents outlive a SIGKILLed driver for a minute or so
        with contextlib.suppress(psutil.Error):
            orphan.kill()
    (run_dir,) = run_dirs(tmp_path)
    history = pd.read_csv(run_dir / "history.csv")
    assert len(history) >= 2
    assert history["round"].tolist() == list(range(len(history)))
    assert history["central_acc"].notna().all()
