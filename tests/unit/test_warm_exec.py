"""`sim.deploy.warm_exec`: a SuperNode's ClientApp tasks forked from a warm template (no Ray, no SuperLink).

The forked-task test uses the real forkserver and template (`sim.deploy.warm_template`) with
a stand-in for Flower's `run_clientapp` that records what the task sees; the deployment
end to end (`tests/e2e/test_flwr_run_e2e.py`) runs the real one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
import types

import pytest

from helpers import warm_tasks
from sim.deploy.processes import clientapp_module
from sim.deploy.warm_exec import WarmAppExecutor, forget_app_modules, serverapp_command
from sim.federation import flower_internals


def _spec(task_type: str = "flwr-clientapp", token: str = "token", install: bool = False):
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.types import ExecutionSpec

    return ExecutionSpec(task_type=TaskType(task_type), runtime_api_address="127.0.0.1:9094", token=token,
                         insecure=True, root_certificates_path=None, runtime_dependency_install=install,
                         parent_pid=None, suppress_output=True, task_id=7)


def test_forget_app_modules_drops_the_package_and_nothing_else(monkeypatch):
    for name in ("fakeapp", "fakeapp.client", "fakeapp.client.train", "fakeapp_extra", "fakeappx.sub"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    assert sorted(forget_app_modules("fakeapp")) == ["fakeapp", "fakeapp.client", "fakeapp.client.train"]
    assert "fakeapp_extra" in sys.modules and "fakeappx.sub" in sys.modules and "fakeapp" not in sys.modules


def test_the_template_warms_the_clientapp_that_pyproject_names():
    assert clientapp_module() == "sim.deploy.app"


def test_a_clientapp_task_is_forked_warm_and_imports_the_app_afresh(tmp_path):
    """Forked from the template: torch already imported, none of the project's modules kept, Flower as installed."""
    executor = WarmAppExecutor(runner=warm_tasks.record)
    executor.start()
    out = tmp_path / "task.json"
    assert executor.launch(_spec(token=str(out))).status == "accepted"
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    state = json.loads(out.read_text())
    assert state["torch_loaded"]  # imported by the template, before the fork
    assert state["task_libraries_loaded"]  # and what a task would import lazily (httpcore, PIL)
    assert state["pull_backoff"] == {"initial_backoff": 0.02, "backoff_cap": 0.2}  # shim 12, set in the template
    assert state["app_modules"] == []  # the app comes from the run's FAB, as in a fresh flwr-clientapp
    assert state["pickup_loop"].startswith("flwr.")  # the app module's shim was put back in the template
    assert state["parent"] != os.getpid() and state["pid"] != os.getpid()  # the forkserver's child, not ours
    assert state["address"] == "127.0.0.1:9094" and state["insecure"] and not state["runtime_dependency_install"]
    executor.reconcile()


def test_other_tasks_and_run_time_installs_go_to_flowers_executor(monkeypatch):
    executor = WarmAppExecutor(runner=warm_tasks.record)
    handed = []
    monkeypatch.setattr(executor._fallback, "launch", lambda spec: handed.append(spec.task_type) or "flower")
    assert executor.launch(_spec("flwr-simulation")) == "flower"
    assert executor.launch(_spec(install=True)) == "flower"
    assert handed == ["flwr-simulation", "flwr-clientapp"]


@pytest.mark.parametrize("tls", [False, True])
def test_a_serverapp_task_gets_the_command_line_flowers_executor_would_start(monkeypatch, tls):
    from flwr.supercore.superexec.executor import subprocess_executor
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

    trust = {"insecure": False, "root_certificates_path": "/certs/ca.pem"} if tls else {}
    spec = dataclasses.replace(_spec("flwr-serverapp"), parent_pid=41, **trust)
    started = []
    monkeypatch.setattr(subprocess_executor.subprocess, "Popen", lambda args, **kwargs: started.append(args))
    SubprocessExecutor().launch(spec)
    assert serverapp_command(spec) == started[0]


def test_a_dead_template_costs_one_warning_then_flower_starts_the_tasks(monkeypatch, caplog):
    executor = WarmAppExecutor(runner=warm_tasks.record)
    monkeypatch.setattr(executor._fallback, "launch", lambda spec: "flower")

    def dead(self):
        raise EOFError("unexpected EOF")

    monkeypatch.setattr(executor._context.Process, "start", dead)
    with caplog.at_level(logging.WARNING, logger="sim.deploy.warm_exec"):
        assert executor.launch(_spec()) == "flower"
        assert executor.launch(_spec()) == "flower"
    assert len([r for r in caplog.records if "template unusable" in r.message]) == 1


@pytest.mark.parametrize("flower_as_pinned", [True, False])
def test_superexec_runs_flowers_loop_with_our_executor_only_on_the_pinned_flower(monkeypatch, flower_as_pinned):
    from flwr.supercore.constant import ExecutorType
    from flwr.supercore.superexec import run_superexec as module
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

    ours, seen = object(), {}

    def loop(**kwargs):  # Flower's loop asks the module global for its executor, as run_superexec does
        seen.update(kwargs, executor=module.get_executor(ExecutorType.SUBPROCESS))

    monkeypatch.setattr(flower_internals, "_checked", {})
    if not flower_as_pinned:
        monkeypatch.setattr(flower_internals, "installed_version", lambda package: "0.0.0")
    # the pins are checked against the real loop first (the check is kept), then the loop is stood in for
    assert flower_internals._usable("flwr", flower_internals.WARM_EXEC_SHIM, "warm ClientApp executor") == flower_as_pinned
    monkeypatch.setattr(module, "run_superexec", loop)
    monkeypatch.setattr(module, "get_executor", module.get_executor)  # put back after the test
    flower_internals.run_superexec_with_executor(ours, runtime_api_address="127.0.0.1:9094", insecure=True,
                                                 root_certificates_path=None, parent_pid=12)
    assert (seen["executor"] is ours) == flower_as_pinned
    assert flower_as_pinned or isinstance(seen["executor"], SubprocessExecutor)
    assert seen["runtime_api_address"] == "127.0.0.1:9094" and seen["parent_pid"] == 12
    assert seen["runtime_dependency_install"] is False


def _tiny_fab(root, body: str = "server = client = None\n") -> bytes:
    """The FAB of a two-file Flower App, built by Flower's own `build_fab_from_disk`."""
    from flwr.cli.build import build_fab_from_disk

    (root / "tinyapp").mkdir(parents=True)
    (root / "tinyapp" / "__init__.py").write_text("")
    (root / "tinyapp" / "app.py").write_text(body)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "tinyapp"\nversion = "1.0.0"\ndependencies = []\nlicense = "Apache-2.0"\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["."]\n\n'
        '[tool.flwr.app]\npublisher = "tester"\n\n'
        '[tool.flwr.app.components]\nserverapp = "tinyapp.app:server"\nclientapp = "tinyapp.app:client"\n\n'
        '[tool.flwr.app.config]\n'
    )
    return build_fab_from_disk(root)


def test_an_installed_fab_is_found_without_unzipping_it_again(tmp_path, monkeypatch):
    """The folder returned is the one Flower's own install made; Flower is called only when it is not there."""
    from flwr.cli import install

    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    fab = _tiny_fab(tmp_path / "app")
    installed = install.install_from_fab(fab, skip_prompt=True)  # Flower's own, the first task's
    assert (installed / "tinyapp" / "app.py").is_file()
    calls = []
    monkeypatch.setattr(install, "install_from_fab", lambda *args: calls.append(args) or "flower's")
    assert flower_internals.install_fab_once(fab, None, True) == installed and calls == []
    changed = _tiny_fab(tmp_path / "changed", "server = client = 1234\n")  # another FAB: not installed
    assert flower_internals.install_fab_once(changed, None, True) == "flower's" and len(calls) == 1
    assert flower_internals.install_fab_once(fab, tmp_path / "elsewhere", True) == "flower's"  # another target


def test_forked_tasks_find_installed_fabs_at_once(tmp_path):
    """The template installs the shortcut; every task forked from it inherits it."""
    executor = WarmAppExecutor(runner=warm_tasks.record)
    executor.start()
    out = tmp_path / "task.json"
    executor.launch(_spec(token=str(out)))
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(out.read_text())["install_from_fab"] == "install_fab_once"
