"""Shared test helpers: the repo's paths, config composition, CLI runs, process checks.

Test modules import these (`from helpers import TINY, run_cli`); fixtures stay in conftest.py.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from helpers.compose_cache import compose_cached

REPO = Path(__file__).resolve().parents[2]  # tests/helpers/ -> the repo root
CONF_DIR = REPO / "conf"
CIFAR10_ARCHIVE = Path(
    os.environ.get("SIM_CIFAR10_ARCHIVE", REPO.parent / "shared" / "cifar10" / "cifar10-jpeg.tar.gz")
)

# The CPU kernels every test process uses, whatever the machine's newest vector instructions:
# torch picks kernels by the CPU, and a curve compared with committed numbers (tests/baselines/)
# moves with them (measured: the former synthetic baseline's central_acc at round 8 was 0.38 on
# the machine that made it, 0.34 on an AVX2-only one). ATen's own kernels, oneDNN's convolutions
# and MKL's matrix products each take the AVX2 path (MKL in its reproducible mode), which every
# machine this project has run on has.
PORTABLE_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}

# A run small enough for seconds on two cores: synthetic data, few clients, few rounds.
TINY = [
    "dataset=synthetic",
    "dataset.num_train=600",
    "dataset.num_test=200",
    "num_clients=6",
    "clients_per_round=3",
    "eval_clients_per_round=2",
    "num_rounds=2",
    "client.batch_size=16",
    "client.epochs=1",
]


def compose_config(overrides: list[str] | None = None, return_hydra_config: bool = False):
    """The real config tree composed with `overrides`, as the CLI would see it.

    Each set of config-group choices is composed by Hydra once per test process
    (`helpers.compose_cache`); the value overrides are applied to a copy by Hydra's own code.
    """
    return compose_cached(CONF_DIR, list(overrides or []), return_hydra_config)


def run_cli(args: list[str], cwd: Path, timeout: float = 240, module: str = "sim", env: dict | None = None):
    """`python -m <module> args...` in `cwd`; returns the CompletedProcess (text output).

    The run is forked from this test process's warm template (`helpers.warm_cli`), which
    has imported the libraries a run imports: the same command line, working directory,
    environment, output and exit code, without ~5 s of imports. A call with its own `env`
    (which may change how Python or a library starts) gets a fresh interpreter instead.
    """
    if env is None:
        return WARM_CLI.run(module, [str(a) for a in args], Path(cwd), timeout, {**os.environ, "PYTHONUNBUFFERED": "1"})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )


class WarmCli:
    """The test process's `helpers.warm_cli` template: started on first use, stopped (by pid) at exit."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._replies = b""  # reply bytes read but not yet taken
        self._import_stderr = ""  # what the template's imports printed, as a fresh start prints it

    def _start(self) -> subprocess.Popen:
        self._folder = Path(tempfile.mkdtemp(prefix="warm_cli-"))  # removed by stop()
        stderr_path = self._folder / "imports.err"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
        with stderr_path.open("w") as stderr:
            self._proc = subprocess.Popen([sys.executable, "-m", "helpers.warm_cli"], cwd=REPO / "tests", env=env,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, bufsize=0)
        self._replies = b""
        atexit.register(self.stop)
        if self._reply(timeout=300) is None:
            raise RuntimeError(f"helpers.warm_cli did not start: {stderr_path.read_text()[-3000:]}")
        self._import_stderr = stderr_path.read_text()
        return self._proc

    def _reply(self, timeout: float) -> dict | None:
        """The template's next reply line, or None after `timeout` s without one."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._replies:
            ready, _, _ = select.select([self._proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self._proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("helpers.warm_cli ended unexpectedly")
            self._replies += chunk
        line, _, self._replies = self._replies.partition(b"\n")
        return json.loads(line)

    def run(self, module: str, args: list[str], cwd: Path, timeout: float, env: dict) -> subprocess.CompletedProcess:
        """Fork `python -m module args` in `cwd` with `env`; kill it after `timeout` s as subprocess.run would."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        command = [sys.executable, "-m", module, *args]
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"module": module, "args": args, "cwd": str(cwd), "env": env,
                       "stdout": str(out), "stderr": str(err)}
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            pid = self._reply(timeout=60)["pid"]
            ended = self._reply(timeout)
            timed_out = ended is None
            if timed_out:
                os.kill(pid, signal.SIGKILL)
                ended = self._reply(timeout=60)
            stdout = out.read_text(errors="replace") if out.exists() else ""
            stderr = self._import_stderr + (err.read_text(errors="replace") if err.exists() else "")
        if timed_out:
            raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
        return subprocess.CompletedProcess(command, ended["returncode"], stdout, stderr)

    def stop(self) -> None:
        """End the template: its stdin closes and it exits; killed by pid if it lingers."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(self._folder, ignore_errors=True)


WARM_CLI = WarmCli()


def run_dirs(cwd: Path) -> list[Path]:
    """Run directories (those holding a history.csv) under `cwd/results`, oldest first."""
    return sorted(p.parent for p in (cwd / "results").rglob("history.csv"))


def sweep_run_dirs(cwd: Path) -> list[Path]:
    """The run directories of the one sweep under `cwd/results/multirun`, in job order (from its sweep.csv)."""
    import pandas as pd

    (csv_path,) = (cwd / "results" / "multirun").rglob("sweep.csv")
    return [Path(d) for d in pd.read_csv(csv_path)["run_dir"]]


def processes_started_by(pid: int) -> list[psutil.Process]:
    """Every live process below `pid`: its private Ray instance (GCS, raylet, agents, workers)."""
    return psutil.Process(pid).children(recursive=True)


def still_alive(processes: list[psutil.Process], wait_s: float = 10.0) -> list[str]:
    """Command lines of the `processes` still running (zombies count as gone) after up to `wait_s`."""
    deadline = time.time() + wait_s
    while True:
        alive = []
        for proc in processes:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(" ".join(proc.cmdline())[:200])
            except psutil.Error:
                pass
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.2)


def run_cli_batch(cases: list[tuple[list[str], Path]], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """`python -m sim args` for each `(args, cwd)`, all in one subprocess (see `helpers.cli_batch`).

    Each result is a CompletedProcess with the case's exit code, stdout and stderr, as `run_cli`
    would return them; only the interpreter start-up is shared between the cases.
    """
    payload = json.dumps([{"args": list(args), "cwd": str(cwd)} for args, cwd in cases])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as tmp:
        results_path = Path(tmp) / "results.json"
        done = subprocess.run([sys.executable, "-m", "helpers.cli_batch", str(results_path)], input=payload,
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
        if done.returncode != 0:
            raise RuntimeError(f"helpers.cli_batch failed (exit {done.returncode}): {done.stderr[-3000:]}")
        results = json.loads(results_path.read_text())
    return [subprocess.CompletedProcess(["python", "-m", "sim", *args], r["returncode"], r["stdout"], r["stderr"])
            for (args, _), r in zip(cases, results)]


def interrupt_at_round(cwd: Path, args: list[str], sig: int, at_round: int) -> tuple[int, Path, list[psutil.Process]]:
    """Start a run, send `sig` once history.csv has `at_round`.

    Returns the exit code, the run directory and the processes the run had started.
    """
    proc = subprocess.Popen([sys.executable, "-m", "sim", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            found = run_dirs(cwd)
            if found and len((found[0] / "history.csv").read_text().splitlines()) >= at_round + 2:
                break
            time.sleep(0.1)
        started = processes_started_by(proc.pid)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "abandoned" in output, output[-3000:]
    assert len(started) >= 3, "the run had not started its Ray instance"  # GCS, raylet, workers
    (run_dir,) = run_dirs(cwd)
    return proc.returncode, run_dir, started
