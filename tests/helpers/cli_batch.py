"""Many `python -m sim ...` invocations in one process: each is run as `python -m sim` runs it.

    python -m helpers.cli_batch RESULTS.json < cases.json

Each case (`{"args": [...], "cwd": "..."}`) executes `sim/__main__.py` as `__main__` with its
own `sys.argv` and working directory (`runpy.run_module`, the mechanism of `python -m`), so
Hydra parses the command line, composes, validates and exits exactly as on a shell; only the
interpreter start-up and imports are shared. For cheap invocations (refusals, `--cfg job`)
whose cost is mostly that start-up. `run_cli_batch` in `helpers` drives it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys


def run_case(args: list[str], cwd: str) -> dict:
    """One `python -m sim args` in `cwd`: its exit code and captured output."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    here = os.getcwd()
    os.chdir(cwd)
    argv, sys.argv = sys.argv, ["sim", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_module("sim", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        os.chdir(here)
        sys.argv = argv
    return {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


if __name__ == "__main__":
    results_path = sys.argv[1]  # read before the cases set sys.argv
    cases = json.load(sys.stdin)
    results = [run_case(case["args"], case["cwd"]) for case in cases]
    with open(results_path, "w") as out:  # a file: a run's loggers may still hold the real stdout
        json.dump(results, out)
