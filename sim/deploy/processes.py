"""Flower's processes for `flwr run`, kept offline, contained and stoppable by pid.

- `flwr_environment`: `FLWR_HOME` inside the project (`.flwr/`, git-ignored) unless the
  caller set one, no run-time dependency installs, no telemetry or update checks, and the
  venv's `bin/` first on PATH so `flwr` finds `flower-superlink`, and `RAY_ADDRESS=local`
  unless the caller set one: Flower's Simulation Runtime calls `ray.init()` without an
  address, which attaches to any Ray cluster running on this machine (another run's, a
  test's) instead of starting its own.
- `clientapp_module`: the module `[tool.flwr.app.components]` names for the ClientApp.
- `free_port`: a loopback port nobody listens on now (tests and deployments run side by side).
- `local_superlinks`: the SuperLinks `flwr run` started detached for one `FLWR_HOME`
  (found by their log file inside it, never by name alone), and `stop_tree` / `stop_trees`
  to end processes and everything below them by pid.
"""

from __future__ import annotations

import os
import socket
import sys
import tomllib
from pathlib import Path

import psutil

from sim import OFFLINE_ENVIRONMENT

PROJECT = Path(__file__).resolve().parents[2]
QUIET_FLOWER = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # nothing is installed at run time
    "FLWR_DISABLE_UPDATE_CHECK": "1",  # no version check against pypi.org
}
OWN_RAY = {"RAY_ADDRESS": "local"}  # the Simulation Runtime starts a Ray instance of its own


def flwr_environment(base: dict[str, str] | None = None, flwr_home: Path | None = None) -> dict[str, str]:
    """An environment for `flwr`, `flower-superlink` and `flower-supernode` subprocesses."""
    env = dict(os.environ if base is None else base)
    for key, value in {**OFFLINE_ENVIRONMENT, **QUIET_FLOWER, **OWN_RAY}.items():
        env.setdefault(key, value)
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    env.setdefault("FLWR_HOME", str(PROJECT / ".flwr"))
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    return env


def clientapp_module(project: Path = PROJECT) -> str:
    """The module of the project's ClientApp (`[tool.flwr.app.components] clientapp = "module:attr"`)."""
    components = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"]
    return str(components["clientapp"]).split(":", 1)[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free at this moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_superlinks(flwr_home: Path) -> list[psutil.Process]:
    """The `flower-superlink` processes that `flwr run` started for `flwr_home` (its log file is inside)."""
    marker = str(Path(flwr_home) / "local-superlink")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any("flower-superlink" in part for part in cmdline[:3]) and any(marker in part for part in cmdline):
            found.append(proc)
    return found


def stop_tree(proc: psutil.Process, timeout: float = 10.0) -> None:
    """SIGTERM `proc` and all its descendants (by pid), then SIGKILL whatever is left after `timeout`."""
    stop_trees([proc], timeout)


def stop_trees(procs, timeout: float = 10.0) -> None:
    """`stop_tree` for several processes at once: every one and its descendants get SIGTERM together,
    then one wait of at most `timeout` (stopping ten SuperNodes one by one took 2 s each)."""
    by_pid: dict[int, psutil.Process] = {}  # each once: a second SIGTERM would cut short Flower's graceful exit
    for proc in procs:
        try:
            by_pid.update({member.pid: member for member in [*proc.children(recursive=True), proc]})
        except psutil.NoSuchProcess:
            continue
    family = list(by_pid.values())
    for member in family:
        try:
            member.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)
