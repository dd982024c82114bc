"""`flwr run .` on Flower's Simulation Runtime and `python -m sim.deploy` on real SuperNodes.

Small end-to-end runs on synthetic data over loopback, compared column by column:
`python -m sim` (the reference), `flwr run .` (same packs: equal exactly) and a
deployment of 3 SuperNodes for 3 rounds over TLS (one client per message: equal within
1e-5 relative before the kill) beside which the test starts a second SuperNode for client
2 and one with a bad partition id: the node serving client 2 is stopped after round 1, the
other takes over without the run waiting, the bad one is refused in one line; and a
deployment interrupted with Ctrl-C mid-run. Every Flower process a test started is stopped
by pid and checked gone; each uses its own FLWR_HOME and free ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
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


def _flower_child(parent: psutil.Process, program: str, marker: str = "") -> tuple[psutil.Process, list[str]] | None:
    """(process, command line) of the first `program` (e.g. flower-supernode) below `parent` whose
    command line holds `marker`; None while there is none."""
    for proc in parent.children(recursive=True):
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if any(program in part for part in cmdline[:3]) and marker in " ".join(cmdline):
            return proc, cmdline
    return None


def _supernode(parent: psutil.Process, partition_id: int) -> psutil.Process | None:
    found = _flower_child(parent, "sim.deploy.supernode", f"partition-id={partition_id} ")  # Flower's, fast polls
    return found[0] if found else None


def _rows(history: Path) -> int:
    return len(history.read_text().splitlines()) - 1 if history.exists() else 0


def _superlink(parent: psutil.Process) -> tuple[int, str] | None:
    """(port, CA certificate) of the TLS SuperLink `python -m sim.deploy --tls` started (None until it runs)."""
    found = _flower_child(parent, "flower-superlink", "--port ")
    if not found:
        return None
    cmdline = found[1]
    return int(cmdline[cmdline.index("--port") + 1]), cmdline[cmdline.index("--ssl-ca-certfile") + 1]


def _node_id(supernode_log: Path) -> int:
    """The node id Flower gave a SuperNode, from its log."""
    return int(re.search(r"SuperNode ID: (\d+)", supernode_log.read_text()).group(1))


def _start_extra_supernode(port: int, ca: str, node_config: str, cwd: Path, log: Path) -> subprocess.Popen:
    """A SuperNode started beside the deployment's own, on the same SuperLink (trusting its CA), with a
    FLWR_HOME of its own: Flower's FAB install makes the app folder before it copies the files in, so a second SuperNode
    installing into the same home at the same moment sees the folder and loads a half-copied app."""
    with log.open("wb") as out:
        return subprocess.Popen(
            ["flower-supernode", "--root-certificates", ca, "--superlink", f"127.0.0.1:{port}", "--host", "127.0.0.1",
             "--port", str(free_port()), "--node-config", node_config],
            cwd=cwd, env=flwr_environment(flwr_home=cwd / f".flwr-{log.stem}"), stdout=out, stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
def test_deploy_three_supernodes_over_tls_one_stopped_mid_run(tmp_path, data_dir, reference):
    """3 SuperNodes for 3 rounds, plus two the test starts on the same SuperLink: one that also holds
    partition 2 (of the two, the one serving client 2 is stopped after round 1; the other takes over)
    and one with an out-of-range partition id (refused in one line, on the server and on the node).

    `--tls`: the SuperLink serves TLS with certificates made for this deployment, flwr and every
    SuperNode trust its CA, nothing starts insecure, and the certificates go with the deployment."""
    # Flower starts one ClientApp process per message on a SuperNode (torch imported each time): a loaded
    # machine needs minutes, so round_timeout is generous; the stopped node deactivates and is not awaited
    args = [*SMALL, "num_rounds=3", "round_timeout=300", f"dataset.data_dir={data_dir}"]
    proc = subprocess.Popen(
        [os.sys.executable, "-m", "sim.deploy", "--supernodes", "3", "--tls", *args], cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    parent = psutil.Process(proc.pid)
    seen: dict[int, psutil.Process] = {}
    extra: list[subprocess.Popen] = []
    extra_procs: list[psutil.Process] = []
    killed = False
    try:
        deadline = time.monotonic() + 400
        while proc.poll() is None and time.monotonic() < deadline:
            for root in (parent, *extra_procs):
                try:
                    seen.update({p.pid: p for p in root.children(recursive=True)})
                except psutil.Error:
                    pass
            superlink = None if extra else _superlink(parent)
            if superlink is not None:
                where = json.dumps(str(tmp_path))
                for name, node_config in (("standby", f"partition-id=2 num-partitions=3 data-dir={where}"),
                                          ("bad", f"partition-id=7 num-partitions=3 data-dir={where}")):
                    extra.append(_start_extra_supernode(*superlink, node_config, tmp_path, tmp_path / f"{name}.log"))
                    extra_procs.append(psutil.Process(extra[-1].pid))  # kept: the pid may be reaped below
            dirs = run_dirs(tmp_path)
            serving = re.search(r"also hold partition-id=2, served by SuperNode (\d+)", " ".join("".join(lines).split()))
            if not killed and serving and dirs and _rows(dirs[0] / "history.csv") >= 2:  # rounds 0, 1 in
                # of the two partition-2 nodes, the one serving client 2 is stopped (Flower's ids are random)
                ours = _supernode(parent, 2)
                assert ours is not None, [(c.pid, c.cmdline()) for c in parent.children(recursive=True)]
                node_ids = {_node_id(dirs[0] / "flower" / "supernode-2.log"): ours,
                            _node_id(tmp_path / "standby.log"): extra_procs[0]}
                stop_tree(node_ids[int(serving.group(1))])  # SIGTERM to the SuperNode; its SuperExec (--parent-pid) and tasks follow it out
                killed = True
            time.sleep(0.2)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        for node, node_proc in zip(extra, extra_procs):  # started here, stopped here, by pid
            stop_tree(node_proc)  # a no-op for the standby if it was the one stopped mid-run
            node.wait(timeout=30)
    out = "".join(lines)
    flat = " ".join(out.split())  # the console wraps long lines
    assert proc.returncode == 0, out[-4000:]
    assert killed, out[-4000:]
    (run_dir,) = run_dirs(tmp_path)
    history = _metrics(run_dir)
    assert list(history["round"]) == [0, 1, 2, 3]
    # before the stop: python -m sim's numbers (one client per message instead of two packs: sums reorder)
    before, expected = history.iloc[:2], reference.iloc[:2]
    np.testing.assert_allclose(before[METRICS[1:]].to_numpy(float), expected[METRICS[1:]].to_numpy(float),
                               rtol=1e-5, equal_nan=True, err_msg=out[-3000:])
    # round 2: client 2 is lost if its node went after the server's check between rounds 1 and 2 (a
    # failure, not waited for), else the standby serves it already; round 3: the standby serves it
    assert list(history["train_clients"].iloc[2:]) == [3, 3], out[-3000:]
    assert history["train_failures"].iloc[2] in (0, 1) and history["train_failures"].iloc[3] == 0, out[-3000:]
    assert "serves client 2 from the next round" in flat
    assert history["central_acc"].notna().all()
    # the bad SuperNode: one line on the server, and one on the node that must change its --node-config
    assert "refused: partition-id=7 is out of range: must be 0..2" in flat, out[-3000:]
    assert "cannot serve the run: partition-id=7 is out of range" in (tmp_path / "bad.log").read_text()
    assert (run_dir / "summary.json").exists() and (run_dir / "curves.png").exists()
    # the helper's SuperNodes ran their ClientApps forked from a warm template (sim.deploy.warm_exec)
    for k in range(3):
        assert "forked from the warm template" in (run_dir / "flower" / f"superexec-{k}.log").read_text()
    # and the SuperLink's SuperExec its ServerApp, every one of them forked by the zygote (sim/deploy/zygote.py)
    assert "flwr-serverapp tasks are forked from the warm template sim.deploy.warm_template in the deployment's zygote" \
        in (run_dir / "flower" / "superexec-superlink.log").read_text()
    for k in range(2):  # and were woken by their SuperNode's doorbell for each message (sim/deploy/doorbell.py)
        woken = re.search(r"doorbell: woken (\d+) times", (run_dir / "flower" / f"superexec-{k}.log").read_text())
        assert woken and int(woken.group(1)) >= 3, f"superexec-{k}: {woken}"  # a train message each round at least
        node_log = (run_dir / "flower" / f"supernode-{k}.log").read_text()
        woken = re.search(r"doorbell: woken (\d+) times by the ServerApp", node_log)
        assert woken and int(woken.group(1)) >= 3, f"supernode-{k}: {woken}"  # and their SuperNodes by the ServerApp
    assert still_alive(list(seen.values())) == []  # the templates (forkservers) and their tasks included
    logs = {path.name: path.read_text() for path in (run_dir / "flower").glob("*.log")}
    assert "Uvicorn running on https://127.0.0.1" in logs["superlink.log"]
    assert {f"supernode-{k}.log" for k in range(3)} <= set(logs)
    assert not [name for name, text in logs.items() if "insecure" in text.lower()]  # Flower warns on --insecure
    assert not any((REPO / ".flwr").glob("deploy-*"))  # the certificates went with the deployment's state


@pytest.mark.slow
def test_ctrl_c_stops_every_process_the_deployment_forked(tmp_path, data_dir):
    """Ctrl-C (SIGINT) mid-run: `python -m sim.deploy` exits 130 with its one line, and every process
    below it (the zygote, the SuperLink, every SuperNode and SuperExec, their tasks) is gone, as is
    Flower's state for the deployment; the finished rounds stay in history.csv. Also when the
    launcher inherited SIGINT ignored, as a shell's background job (`cmd &`, nohup) does."""
    args = [*SMALL, "num_clients=2", "clients_per_round=2", "num_rounds=50", f"dataset.data_dir={data_dir}"]
    home, log_path = tmp_path / "flwr-home", tmp_path / "deploy.log"
    with log_path.open("w") as out:  # a file, not a pipe: nothing below the launcher can hold the test up
        # as a non-interactive shell starts a background job: SIGINT ignored, then exec
        proc = subprocess.Popen(["sh", "-c", 'trap "" INT; exec "$@"', "sh", os.sys.executable, "-m", "sim.deploy",
                                 "--supernodes", "2", *args], cwd=tmp_path, env={**os.environ, "FLWR_HOME": str(home)},
                                stdout=out, stderr=subprocess.STDOUT)
    parent, seen = psutil.Process(proc.pid), {}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            seen.update({p.pid: p for p in parent.children(recursive=True)})
            dirs = run_dirs(tmp_path)
            if dirs and _rows(dirs[0] / "history.csv") >= 2:  # rounds 0 and 1 are in
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # as Ctrl-C sends it
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            stop_tree(parent)
            proc.wait(timeout=30)
    out = log_path.read_text()
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted by SIGINT: every SuperLink and SuperNode process started here was stopped" in out
    assert len(seen) >= 7  # the zygote, the SuperLink and its SuperExec, two SuperNodes and theirs, flwr run...
    assert still_alive(list(seen.values())) == []
    assert not list(home.glob("deploy-*"))  # Flower's state for the deployment went with it
    (run_dir,) = run_dirs(tmp_path)
    assert _rows(run_dir / "history.csv") >= 2
