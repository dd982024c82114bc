"""`flwr run .` on Flower's Simulation Runtime and `python -m sim.deploy` on real SuperNodes.

Small end-to-end runs on synthetic data over loopback, compared column by column:
`python -m sim` (the reference), `flwr run .` (same packs: equal exactly) and a
deployment of 3 SuperNodes for 3 rounds in which one SuperNode is stopped after round 1
(one client per message: equal within 1e-5 relative before the kill; afterwards that
client counts as a failure and the run goes on). Every Flower process a test started is
stopped by pid and checked gone; each uses its own FLWR_HOME and free ports.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from helpers import REPO, run_cli, run_dirs, still_alive
from sim.deploy.processes import flwr_environment, free_port, local_superlinks, stop_tree

# 3 clients (one per SuperNode in the deployment), all of them train, one evaluates.
SMALL = [
    "dataset=synthetic", "dataset.num_train=300", "dataset.num_test=100", "num_clients=3", "clients_per_round=3",
    "eval_clients_per_round=1", "client.batch_size=16", "client.epochs=1", "checkpoint_every=0",
]
METRICS = ["round", "train_clients", "train_failures", "eval_clients", "eval_failures", "train_loss",
           "fed_eval_loss", "fed_eval_acc", "central_loss", "central_acc"]


# ---------------------------------------------------------------- end to end


def _metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv")[METRICS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir) -> pd.DataFrame:
    """`python -m sim` on SMALL for 2 rounds: the history the other two paths must reproduce."""
    cwd = tmp_path_factory.mktemp("reference")
    result = run_cli([*SMALL, "num_rounds=2", f"dataset.data_dir={data_dir}"], cwd=cwd, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(cwd)
    return _metrics(run_dir)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster_address")
def test_flwr_run_on_the_simulation_runtime_equals_python_m_sim(tmp_path, data_dir, reference):
    # a 1-CPU Ray cluster runs on this machine (ray_cluster_address): the Simulation Runtime
    # must not attach to it (its 2 CPUs a client fit on none of its nodes) but start its own
    home = tmp_path / ".flwr"
    env = flwr_environment(flwr_home=home)
    env.update(FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()), FLWR_LOCAL_CONTROL_API_PORT=str(free_port()),
               PYTHONUNBUFFERED="1")
    overrides = " ".join([*SMALL, "num_rounds=2", f"dataset.data_dir={data_dir}"])
    seen: dict[int, psutil.Process] = {}  # the SuperLink flwr starts detached, and everything below it
    log_path = tmp_path / "flwr-run.log"
    try:
        with log_path.open("w") as out:
            proc = subprocess.Popen(
                ["flwr", "run", str(REPO), "--stream", "--run-config", f'overrides="{overrides}"'],
                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
            )
            deadline = time.monotonic() + 400
            while proc.poll() is None and time.monotonic() < deadline:
                for link in local_superlinks(home):
                    seen[link.pid] = link
                    try:
                        seen.update({p.pid: p for p in link.children(recursive=True)})
                    except psutil.Error:
                        pass
                time.sleep(0.3)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        assert len(local_superlinks(home)) == 1, "flwr run leaves exactly one local SuperLink for this FLWR_HOME"
    finally:
        for link in local_superlinks(home):
            stop_tree(link)
    stdout = log_path.read_text()
    assert proc.returncode == 0, stdout[-4000:]
    assert len(seen) >= 3  # SuperLink, SuperExec, flwr-simulation (with its Ray) were seen while running
    (run_dir,) = run_dirs(tmp_path)
    assert f"run directory: {run_dir}" in stdout.replace("\n", "")
    for name in ("history.csv", "summary.json", "curves.png", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert (run_dir / name).exists(), name
    assert list(pd.read_csv(run_dir / "history.csv").columns) == [*METRICS, "round_s", "elapsed_s"]
    pd.testing.assert_frame_equal(_metrics(run_dir), reference, check_exact=True)
    assert still_alive(list(seen.values())) == []
    assert not local_superlinks(home)


def _supernode(parent: psutil.Process, partition_id: int) -> psutil.Process | None:
    for proc in parent.children(recursive=True):
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if any("flower-supernode" in part for part in cmdline[:3]) and f"partition-id={partition_id} " in " ".join(cmdline):
            return proc
    return None


def _rows(history: Path) -> int:
    return len(history.read_text().splitlines()) - 1 if history.exists() else 0


@pytest.mark.slow
def test_deploy_three_supernodes_one_stopped_mid_run(tmp_path, data_dir, reference):
    # Flower starts one ClientApp process per message on a SuperNode (torch imported each time): a loaded
    # machine needs minutes, so round_timeout is generous; the stopped node deactivates and is not awaited
    args = [*SMALL, "num_rounds=3", "round_timeout=300", f"dataset.data_dir={data_dir}"]
    proc = subprocess.Popen(
        [os.sys.executable, "-m", "sim.deploy", "--supernodes", "3", *args], cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    parent = psutil.Process(proc.pid)
    seen: dict[int, psutil.Process] = {}
    killed = False
    deadline = time.monotonic() + 400
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen.update({p.pid: p for p in parent.children(recursive=True)})
        except psutil.Error:
            pass
        dirs = run_dirs(tmp_path)
        if not killed and dirs and _rows(dirs[0] / "history.csv") >= 2:  # rounds 0 and 1 are in
            node = _supernode(parent, 2)
            assert node is not None
            stop_tree(node)  # SIGTERM to SuperNode 2 (client 2) and its ClientApp process
            killed = True
        time.sleep(0.2)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out[-4000:]
    assert killed
    (run_dir,) = run_dirs(tmp_path)
    history = _metrics(run_dir)
    assert list(history["round"]) == [0, 1, 2, 3]
    # before the stop: python -m sim's numbers (one client per message instead of two packs: sums reorder)
    before, expected = history.iloc[:2], reference.iloc[:2]
    np.testing.assert_allclose(before[METRICS[1:]].to_numpy(float), expected[METRICS[1:]].to_numpy(float),
                               rtol=1e-5, equal_nan=True, err_msg=out[-3000:])
    # after: client 2 is lost in every round it is sampled for training, and the run went on
    after = history.iloc[2:]
    assert (after["train_clients"] == 3).all() and (after["train_failures"] == 1).all(), out[-3000:]
    assert after["central_acc"].notna().all()
    assert (run_dir / "summary.json").exists() and (run_dir / "curves.png").exists()
    assert still_alive(list(seen.values())) == []
    assert not (REPO / ".flwr").exists() or not any((REPO / ".flwr").glob("deploy-*"))
