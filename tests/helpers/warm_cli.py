"""`python -m sim ...` forked from a warm interpreter: the CLI as a shell runs it, without its imports.

    python -m helpers.warm_cli        (from tests/; started and stopped by `WarmCli`)

A `python -m sim` process spends about 5 s of CPU importing torch, Flower, Ray, Hydra,
matplotlib and pandas before it reads its command line, and the end-to-end tests start
dozens of them on two cores. This template process imports those libraries once, as a run
would (the `sim` package first, which switches off telemetry), then forks one child per
request. Each child becomes the run: its own working directory, environment, `sys.argv`,
`sys.path[0]` (the working directory, as `python -m` sets it), fresh random seeds, stdin
from /dev/null and stdout/stderr into files; it executes the module as `__main__` with
`runpy` (the mechanism of `python -m`), then shuts down as the interpreter would (joins
non-daemon threads, runs the atexit handlers, flushes) and exits with the run's code.
Whatever the imports printed to stderr is put in front of every child's stderr, as a real
start would print it.

What differs from a fresh interpreter: the modules are already imported, so a library that
reads the environment when imported sees the template's (the test process's) environment.
`helpers.run_cli` therefore starts a real process for a call that passes its own `env`,
and the tests about signals, process trees and interpreter start-up start real processes.

Protocol (one JSON object a line): the template replies `{"ready": true}` once its imports
are done; then for each request `{"module", "args", "cwd", "env", "stdout", "stderr"}` it
replies `{"pid": N}` once forked and `{"returncode": N}` once the run exited.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import random
import runpy
import sys
import threading
import traceback

PRELOAD = ("sim", "sim.run.recipe", "sim.run.history", "pandas", "matplotlib.pyplot")


def _exit_code(stop: SystemExit) -> int:
    """The process exit code `sys.exit(stop.code)` gives (a message is printed and means 1)."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


def _become_the_run(request: dict) -> None:
    """In the forked child: take the request's cwd, environment, argv and stdio, run the module, exit."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True,
                                  write_through=unbuffered)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                                  line_buffering=True, write_through=True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    sys.path[0] = os.getcwd()  # `python -m` puts the working directory first
    sys.argv = ["-m", *request["args"]]
    random.seed()  # a fresh interpreter seeds from the OS; a fork would share the template's state
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = _exit_code(stop)
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()  # the interpreter's shutdown: non-daemon threads, then atexit, then flush
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _reply(message: dict) -> None:
    """One protocol line to the test process."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve() -> None:
    """Import PRELOAD, then fork a run for every request line on stdin until stdin closes."""
    for name in PRELOAD:
        __import__(name)
    _reply({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _become_the_run(request)
        _reply({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _reply({"returncode": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve()
