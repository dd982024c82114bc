"""Algorithms through `python -m sim`: resume with client state, and an algorithm from outside the package.

(Every algorithm also runs in the one-sweep test of tests/e2e/test_strategies_e2e.py, which takes
every file of conf/strategy/.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from helpers import REPO, TINY, run_cli, run_dirs
from sim.run.history import COLUMNS, TIME_COLUMNS

pytestmark = pytest.mark.slow
METRICS = [c for c in COLUMNS if c not in TIME_COLUMNS] + ["control_norm"]


def test_scaffold_resumed_after_ctrl_c_equals_an_uninterrupted_run(tmp_path, data_dir, ray_cluster_address):
    # failures: a failed client keeps its previous control variate, in both runs alike
    args = [*TINY, f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}", "strategy=scaffold",
            "num_rounds=6", "client.failure_rate=0.2", "client.momentum=0"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir()
    resumed.mkdir()
    result = run_cli(args, cwd=straight, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    proc = subprocess.Popen([sys.executable, "-m", "sim", *args], cwd=resumed,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            found = run_dirs(resumed)
            if found and len((found[0] / "history.csv").read_text().splitlines()) >= 5:  # rounds 0..3 done
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    (run_dir,) = run_dirs(resumed)
    assert len(pd.read_csv(run_dir / "history.csv")) < 7, "the run finished before the interrupt"
    result = run_cli([f"resume={run_dir}"], cwd=resumed, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    (straight_dir,) = run_dirs(straight)
    expected = pd.read_csv(straight_dir / "history.csv")
    got = pd.read_csv(run_dir / "history.csv")
    pd.testing.assert_frame_equal(got[METRICS], expected[METRICS])
    assert expected["train_failures"].sum() > 0  # some clients failed and kept their state
    straight_states = sorted(p.name for p in (straight_dir / "client_state").glob("*.npz"))
    assert sorted(p.name for p in (run_dir / "client_state").glob("*.npz")) == straight_states  # one per client
    for name in straight_states:  # every client's control variate, bit for bit
        with np.load(straight_dir / "client_state" / name) as a, np.load(run_dir / "client_state" / name) as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_an_algorithm_from_outside_the_package_runs_through_config_alone(tmp_path, data_dir):
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "examples"), os.environ.get("PYTHONPATH", "")])}
    result = run_cli(["--config-dir", str(REPO / "examples" / "conf"), "strategy=my_algorithm", *TINY,
                      f"dataset.data_dir={data_dir}", "num_rounds=3"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history.columns) == [*COLUMNS, "update_norm"]
    assert (history.loc[1:, "update_norm"] > 0).all()
    assert len(list((run_dir / "client_state").glob("*.npz"))) >= 3  # the clients' momentum buffers
