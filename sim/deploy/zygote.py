"""One process that imports Flower, torch and the ClientApp once and forks every other process of a deployment.

`sim.deploy` starts ten SuperNodes with ten SuperExecs, each of which kept a template for
its ClientApp tasks: thirty Python processes importing Flower (3 CPU-s each here) or torch
(6 CPU-s), all at once on a machine of two cores. Instead it starts one zygote: Python's
own `multiprocessing` forkserver, preloading `PRELOAD` (Flower's SuperNode and SuperExec,
and `sim.deploy.warm_template`, the ClientApp's warm-up), in the deployment's environment
and working directory. Every SuperNode and SuperExec is then forked from it
(`Zygote.start_process`: a process of its own, in the same state a fresh
`python -m <module>` has after its imports, with its own environment, log and process
title), and each SuperExec has its tasks forked there too (`use_zygote`, given the
zygote's socket in `ZYGOTE_ENV`): the SuperNodes' ClientApps, and the ServerApp of the
SuperLink's SuperExec. All of them start with the imports done, and share the zygote's
memory until they write to it. What the template changes in Flower when imported (shims
8 and 12 of `sim/federation/flower_internals.py`) holds in all of them; the SuperNodes
apply shim 12 themselves anyway, and shim 8 is used only by `run_clientapp`.

The zygote is a plain subprocess of the launcher (`flower`'s log folder gets its output in
`zygote.log`), stopped by pid with the rest; its children are reaped by it and their exit
codes reach whoever asked for them, as with any `multiprocessing` forkserver. Connecting to
a forkserver that another process started uses `multiprocessing.forkserver`'s `ForkServer`
with the address set (`SharedForkServer`); `ZYGOTE_PYTHONS` lists the Pythons whose
forkserver this was written against, and elsewhere `sim.deploy` starts every process on
its own as before.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import socket
import subprocess
import sys
from importlib import import_module
from multiprocessing import forkserver, resource_tracker
from pathlib import Path
from typing import IO

PRELOAD = [  # imported once by the zygote, before its first fork
    "sim.deploy.warm_template",  # torch, Flower's ClientApp runtime and the project's ClientApp module
    "sim.deploy.supernode",
    "flwr.supernode.cli",
    "sim.deploy.warm_exec",
    "flwr.supercore.superexec.run_superexec",
    "sim.deploy.zygote",
]
ZYGOTE_ENV = "SIM_ZYGOTE"  # the zygote's socket: a SuperExec forked from it forks its ClientApp tasks there too
LOG_ENV = "SIM_DEPLOY_LOG"  # a forked process's log file: its ClientApp tasks append to it too
ZYGOTE_PYTHONS = ((3, 10), (3, 11), (3, 12), (3, 13))  # forkserver protocol without an authentication key


def zygote_supported() -> bool:
    """True on a Python whose `multiprocessing` forkserver a process can share with others (see `ZYGOTE_PYTHONS`)."""
    return sys.version_info[:2] in ZYGOTE_PYTHONS


class SharedForkServer(forkserver.ForkServer):
    """`multiprocessing`'s ForkServer, connecting to a fork server another process started (at `address`)."""

    def __init__(self, address: str, alive_fd: int):
        super().__init__()
        self._forkserver_address = address
        self._forkserver_alive_fd = alive_fd  # handed to each child, as a ForkServer of one's own does

    def ensure_running(self) -> None:
        """The fork server is the zygote's: only this process's resource tracker is started if needed."""
        resource_tracker.ensure_running()


def use_zygote(address: str, alive_fd: int | None = None) -> None:
    """Make this process's `forkserver` context fork its processes in the zygote at `address`.

    Each child gets `alive_fd` (default: the one this process got if the zygote forked it),
    so the zygote lives on while any process it forked does, as Python's own forkserver does."""
    if alive_fd is None:
        alive_fd = forkserver._forkserver._forkserver_alive_fd  # set in a child of a forkserver
    shared = SharedForkServer(address, alive_fd if alive_fd is not None else os.open(os.devnull, os.O_RDONLY))
    forkserver._forkserver = shared
    forkserver.ensure_running = shared.ensure_running
    forkserver.connect_to_new_process = shared.connect_to_new_process


def become(env: dict[str, str], log: str | None, title: str) -> None:
    """In a forked child: take `env` as the environment, append stdout and stderr to `log`, show `title` in `ps`."""
    import setproctitle

    setproctitle.setproctitle(title)  # first: it finds its room in the memory of the environment it started with
    os.environ.clear()
    os.environ.update(env)
    if log is not None:
        os.environ[LOG_ENV] = log
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def run_forked(entry: str, argv: list[str], env: dict[str, str], log: str) -> None:
    """The forked child's life: become `python -m <module> argv` (environment, log, title, `sys.argv`),
    call `entry` (`module:function`), then run the exit handlers a Python process runs when it ends."""
    module, function = entry.split(":")
    become(env, log, " ".join([sys.executable, "-m", module, *argv]))
    sys.argv = [module, *argv]
    try:
        code = getattr(import_module(module), function)()
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends its children with os._exit, which skips them
    sys.exit(code or 0)


class ForkedProcess:
    """A process forked by the zygote, with the part of `subprocess.Popen` that `sim.deploy` uses (pid, wait)."""

    def __init__(self, process: multiprocessing.process.BaseProcess):
        self._process = process

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait at most `timeout` seconds for it to end; its exit code (None if it still runs)."""
        self._process.join(timeout)
        return self._process.exitcode


class Zygote:
    """The zygote of one deployment: started in its environment and folder, stopped with it by pid."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path, socket_dir: Path, preload: list[str] | None = None):
        self.env, self.cwd, self.log, self.socket_dir = env, cwd, log, socket_dir
        self.preload = PRELOAD if preload is None else preload  # the modules it imports before its first fork
        self.address: str | None = None
        self.process: subprocess.Popen | None = None
        self._alive_w: int | None = None

    def start(self) -> subprocess.Popen:
        """Start the forkserver (its imports run in the background) and make this process fork there."""
        self.address = str(self.socket_dir / "zygote.sock")
        alive_r, self._alive_w = os.pipe()  # the zygote ends when every holder of the write end has gone
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(self.address)
            os.chmod(self.address, 0o600)
            listener.listen()
            command = f"from multiprocessing.forkserver import main; main({listener.fileno()}, {alive_r}, {self.preload!r})"
            out: IO[bytes] = open(self.log, "wb")  # noqa: SIM115  (the child has its copy)
            try:
                self.process = subprocess.Popen([sys.executable, "-c", command], cwd=self.cwd, env=self.env,
                                                stdout=out, stderr=subprocess.STDOUT,
                                                pass_fds=(listener.fileno(), alive_r),
                                                start_new_session=True)  # Ctrl-C reaches the launcher only
            finally:
                out.close()
                os.close(alive_r)
        use_zygote(self.address, self._alive_w)
        return self.process

    def start_process(self, module: str, argv: list[str], env: dict[str, str], log: Path) -> ForkedProcess:
        """Fork `python -m <module> argv` from the zygote (`module.main()` is its main), logging to `log`."""
        env = {**env, ZYGOTE_ENV: str(self.address)}
        process = multiprocessing.get_context("forkserver").Process(
            target=run_forked, args=(f"{module}:main", argv, env, str(log)), name=module, daemon=False)
        process.start()
        return ForkedProcess(process)

    def close(self) -> None:
        """Let go of the zygote (once its processes are stopped): it ends when its last holder has gone."""
        if self._alive_w is not None:
            os.close(self._alive_w)
            self._alive_w = None
