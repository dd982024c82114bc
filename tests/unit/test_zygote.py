"""`sim.deploy.zygote`: a deployment's processes forked from one process that imported Flower and torch once.

Real forkserver, real preload (`sim.deploy.zygote.PRELOAD`), no SuperLink: the forked `main`
is `tests/helpers/forked_main.py`, and its ClientApp task `helpers.warm_tasks.record`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing import forkserver
from pathlib import Path

import psutil
import pytest

from sim.deploy.processes import stop_trees
from sim.deploy.zygote import Zygote, zygote_supported

pytestmark = pytest.mark.skipif(not zygote_supported(), reason="the zygote is used on Python 3.10-3.13 only")


@pytest.fixture
def own_forkserver():
    """Put back this process's own forkserver after a test made it use a zygote."""
    saved = forkserver._forkserver, forkserver.ensure_running, forkserver.connect_to_new_process
    yield
    forkserver._forkserver, forkserver.ensure_running, forkserver.connect_to_new_process = saved


@pytest.fixture
def zygote(tmp_path, own_forkserver):
    sockets = Path(tempfile.mkdtemp(prefix="sim-zygote-test-"))  # a short path: sockets allow ~100 bytes
    started = Zygote({**os.environ, "SIM_TEST_MARK": "zygote"}, tmp_path, tmp_path / "zygote.log", sockets)
    process = started.start()
    yield started
    stop_trees([psutil.Process(process.pid)], timeout=5.0)
    process.wait(timeout=10)
    started.close()
    shutil.rmtree(sockets, ignore_errors=True)


def test_a_forked_process_starts_warm_as_its_own_program_and_forks_its_tasks_in_the_zygote(zygote, tmp_path):
    """What `sim.deploy` relies on for each SuperNode and SuperExec, and for the SuperExec's tasks."""
    out, log = tmp_path / "node.json", tmp_path / "node.log"
    env = {**os.environ, "SIM_TEST_MARK": "node", "SIM_UNSET_IN_ZYGOTE": "1"}
    child = zygote.start_process("helpers.forked_main", [str(out), "superexec"], env, log)
    assert child.wait(timeout=120) == 3, (log.read_text() if log.exists() else "") + (tmp_path / "zygote.log").read_text()
    state = json.loads(out.read_text())
    assert state["parent"] == zygote.process.pid  # forked by the zygote, not started by us
    assert state["warm"] == ["torch", "flwr.supernode.cli", "flwr.supercore.superexec.run_superexec"]
    assert state["argv"] == ["helpers.forked_main", str(out), "superexec"]
    assert f"-m helpers.forked_main {out} superexec" in state["title"]  # what ps shows
    assert state["environment"] == {"SIM_TEST_MARK": "node", "SIM_ZYGOTE": zygote.address, "SIM_DEPLOY_LOG": str(log)}
    text = log.read_text()
    assert "to stdout" in text and "to stderr" in text and "exit handlers ran" in text  # atexit, as a process ending
    task = state["task"]
    assert task["parent"] == zygote.process.pid and task["pid"] != state["pid"]  # the zygote forked the task too
    assert task["environment_mark"] == "node"  # with its SuperExec's environment
    assert task["torch_loaded"] and task["app_modules"] == []  # warm, and the app comes from its FAB
    assert f"task {task['pid']} ran" in text  # into its SuperExec's log
    assert "in the deployment's zygote" in text


def test_stop_trees_signals_each_process_once_even_when_listed_twice(monkeypatch):
    """A child of a stopped process, listed again on its own (a zygote's SuperNode), gets one SIGTERM: Flower's
    graceful exit puts back the default handler, so a second one could kill it halfway through its exit."""
    signalled: list[int] = []
    terminate = psutil.Process.terminate
    monkeypatch.setattr(psutil.Process, "terminate", lambda self: signalled.append(self.pid) or terminate(self))
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"])
    try:
        deadline = time.monotonic() + 30
        while not (children := psutil.Process(parent.pid).children()) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop_trees([psutil.Process(parent.pid), children[0]], timeout=5.0)
    finally:
        if parent.poll() is None:
            os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
    assert sorted(signalled) == sorted([parent.pid, children[0].pid])
