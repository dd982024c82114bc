"""`python -m sim.deploy --supernodes N [overrides]`: the experiment on a SuperLink with N SuperNodes.

    python -m sim.deploy --supernodes 3 dataset=synthetic num_rounds=3

Starts, on 127.0.0.1 and on ports free at that moment, one `flower-superlink` and N
`flower-supernode`s (SuperNode K gets `--node-config "partition-id=K num-partitions=N
data-dir=<here>"`: it is client K and reads its examples from the partition manifest),
then submits this project with `flwr run` (run config `overrides=...`, `deployment=true`)
and shows the rounds as they land in `history.csv`. The run directory is the one
`python -m sim` would write; the SuperLink's and each SuperNode's log go to its
`flower/` folder. Every process it started is stopped by pid at the end, on
error, on Ctrl-C and on SIGTERM. Flower's state lives in `.flwr/deploy-<port>/` (under
`$FLWR_HOME` when set) for the run's duration. The SuperNodes are Flower's, run by
`sim.deploy.supernode` (polls every 0.2 s, not 3 s) with `sim.deploy.warm_exec` as their
SuperExec (each ClientApp forked from a process that imported the app once, woken by
its SuperNode's doorbell when a message arrives: `sim/deploy/doorbell.py`), all of them
forked from one zygote that imported Flower, torch and the app once
(`sim/deploy/zygote.py`, its output in `flower/zygote.log`); `--nodes
flower` starts `flower-supernode` as Flower runs it (a new `flwr-clientapp` per message,
3.5 s of imports each, here). `num_clients` defaults to N (each
SuperNode is one client), and
`clients_per_round` / `eval_clients_per_round` to min(their default, N).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

import sim  # noqa: F401  (offline environment first)
from sim.config.compose import compose_config
from sim.run.console import RoundProgress
from sim.errors import ConfigError
from sim.deploy.app_files import stage_app
from sim.deploy.certificates import TlsFiles, make_certificates
from sim.deploy.doorbell import DOORBELL_ENV, NODE_DOORBELL_ENV, NODE_DOORBELLS_ENV, node_bell_path, ring
from sim.deploy.processes import PROJECT, flwr_environment, free_port, stop_trees
from sim.deploy.zygote import Zygote, zygote_supported

log = logging.getLogger("sim.deploy")
EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 1, 130, 143
START_TIMEOUT_S = 30.0
CONNECTION = "sim-deploy"
RUN_STARTED = "Successfully started run"  # what `flwr run` prints once the SuperLink has the run (Flower 1.42)


def run_overrides(user: list[str], supernodes: int) -> list[str]:
    """The user's overrides plus this deployment's defaults for the keys the user left alone."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in user}
    defaults = compose_config([])
    extra = []
    if "num_clients" not in given:
        extra.append(f"num_clients={supernodes}")
    for key in ("clients_per_round", "eval_clients_per_round"):
        if key not in given:
            extra.append(f"{key}={min(int(defaults[key]), supernodes)}")
    return [*extra, *user]


def check_config(overrides: list[str], supernodes: int):
    """The validated config and its run directory; ConfigError (one line) when unusable."""
    from sim.config.validate import validate

    if supernodes < 1:
        raise ConfigError(f"--supernodes {supernodes} is not allowed: must be >= 1")
    cfg = compose_config(overrides, with_hydra=True)
    validate(cfg)
    if int(cfg.num_clients) != supernodes:
        raise ConfigError(
            f"num_clients={cfg.num_clients} but --supernodes {supernodes}: each SuperNode is one client; "
            f"set num_clients={supernodes} or --supernodes {cfg.num_clients}"
        )
    return cfg, Path(str(cfg.hydra.run.dir))


class Deployment:
    """A SuperLink and SuperNodes on loopback, every process remembered by pid."""

    def __init__(self, supernodes: int, base: Path, logs: Path, env: dict[str, str] | None = None,
                 fast: bool = True, tls: bool = False):
        self.supernodes = supernodes
        self.fast = fast  # sim.deploy.supernode + warm_exec (fast polls, warm ClientApps), not Flower's own
        self.tls: TlsFiles | None = None  # made in start() when `tls`: the SuperLink serves TLS, everyone trusts its CA
        self._want_tls = tls
        self.base = base
        self.logs = logs
        self.port = free_port()
        self.home = Path(os.environ.get("FLWR_HOME") or PROJECT / ".flwr") / f"deploy-{self.port}"
        self.env = flwr_environment(env, flwr_home=self.home)
        self.procs: list = []  # subprocess.Popen, or the zygote's ForkedProcess (the same pid and wait)
        self.nodes: list = []
        self.sockets: Path | None = None  # the doorbells' and the zygote's sockets (a short path: ~100 bytes at most)
        self.zygote: Zygote | None = None  # with `fast`: forks every SuperNode, SuperExec and ClientApp task
        self.link: subprocess.Popen | None = None
        self.link_bell: Path | None = None  # the doorbell of the SuperLink's SuperExec (with `fast`)
        self.app: Path | None = None  # the app's files, copied for `flwr run` (sim/deploy/app_files.py)
        self._link_env: dict[str, str] | None = None

    def _start(self, name: str, command: list[str], env: dict[str, str] | None = None):
        """Start `command` logging to `<name>.log`: `python -m` ones forked by the zygote when there is one."""
        if self.zygote is not None and command[:2] == [sys.executable, "-m"]:
            try:
                proc = self.zygote.start_process(command[2], command[3:], env or self.env, self.logs / f"{name}.log")
            except (OSError, EOFError) as err:
                raise RuntimeError(f"the zygote could not fork {name} ({type(err).__name__}: {err}); "
                                   f"see {self.logs}/zygote.log") from err
            self.procs.append(proc)
            return proc
        out = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115  (closed when the process is reaped)
        proc = subprocess.Popen(command, cwd=self.base, env=env or self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # Ctrl-C reaches us only; we stop them in order
        out.close()
        self.procs.append(proc)
        return proc

    def start_superlink(self) -> None:
        """The SuperLink (waits for its health endpoint), with the zygote importing meanwhile; the app's
        files staged for `flwr run` (`submit`, which can come before `start_supernodes`)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        if self._want_tls:
            self.tls = make_certificates(self.home / "certificates")
        trust = f'root-certificates = "{self.tls.ca}"' if self.tls else "insecure = true"
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\n{trust}\n'
        )
        serve = (["--ssl-ca-certfile", str(self.tls.ca), "--ssl-certfile", str(self.tls.certificate),
                  "--ssl-keyfile", str(self.tls.key)] if self.tls else ["--insecure"])
        link_env = None
        if self.fast:  # the ServerApp (a child of the SuperLink's) rings the SuperNodes' doorbells
            self.sockets = Path(tempfile.mkdtemp(prefix="sim-deploy-"))
            link_env = {**self.env, NODE_DOORBELLS_ENV: str(self.sockets)}
            if zygote_supported():  # its imports run while the SuperLink starts
                self.zygote = Zygote(self.env, self.base, self.logs / "zygote.log", self.sockets)
                self.procs.append(self.zygote.start())
        link = self.link = self._start("superlink", [
            "flower-superlink", *serve, "--host", "127.0.0.1", "--port", str(self.port),
            "--disable-runtime-dependency-installation", *(["--isolation", "process"] if self.fast else []),
        ], link_env)
        self._link_env = link_env
        self.app = stage_app(PROJECT, self.home / "app")  # while the SuperLink starts
        self._wait_healthy(link)

    def start_supernodes(self) -> None:
        """The SuperNodes (with `fast`, first the SuperLink's SuperExec: the ServerApp's, forked warm,
        rung when the run is submitted); a run submitted before waits for them (`roll_call`)."""
        if self.fast:
            self.link_bell = self.sockets / "superlink.sock"
            self._start("superexec-superlink", [
                sys.executable, "-m", "sim.deploy.warm_exec", "--runtime-api-address", f"127.0.0.1:{self.port}",
                *self.client_trust(), "--parent-pid", str(self.link.pid),
            ], {**self._link_env, DOORBELL_ENV: str(self.link_bell)})
        for k in range(self.supernodes):
            self.nodes.append(self.start_supernode(k))
        log.info("SuperLink 127.0.0.1:%d (pid %d), %d SuperNodes (pids %s)", self.port, self.link.pid,
                 self.supernodes, ", ".join(str(p.pid) for p in self.nodes))

    def start_supernode(self, k: int, node_config: str | None = None) -> subprocess.Popen:
        """SuperNode `k` (client k), with its own Runtime API port. With `fast`: `sim.deploy.supernode`
        (Flower's SuperNode, polling every 0.2 s) and, as its SuperExec, `sim.deploy.warm_exec`
        (ClientApps forked from a warm process); else `flower-supernode` as Flower runs it."""
        if node_config is None:
            node_config = f"partition-id={k} num-partitions={self.supernodes} data-dir={json.dumps(str(self.base))}"
        runtime_port = free_port()
        command = [sys.executable, "-m", "sim.deploy.supernode"] if self.fast else ["flower-supernode"]
        env = None
        if self.fast:  # the ServerApp rings the SuperNode, which rings its SuperExec (sim/deploy/doorbell.py)
            env = {**self.env, DOORBELL_ENV: str(self.sockets / f"{runtime_port}.sock"),
                   NODE_DOORBELL_ENV: str(node_bell_path(self.sockets, runtime_port))}
        node = self._start(f"supernode-{k}", [
            *command, *self.client_trust(), "--superlink", f"127.0.0.1:{self.port}", "--host", "127.0.0.1",
            "--port", str(runtime_port), "--node-config", node_config,
            *(["--isolation", "process"] if self.fast else []),
        ], env)
        if self.fast:
            self._start(f"superexec-{k}", [
                sys.executable, "-m", "sim.deploy.warm_exec", "--runtime-api-address", f"127.0.0.1:{runtime_port}",
                "--insecure", "--parent-pid", str(node.pid),
            ], env)
        return node

    def client_trust(self) -> list[str]:
        """How a SuperNode connects to this SuperLink: `--root-certificates <CA>` with TLS, else `--insecure`."""
        return ["--root-certificates", str(self.tls.ca)] if self.tls else ["--insecure"]

    def _wait_healthy(self, link: subprocess.Popen) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if link.poll() is not None:
                raise RuntimeError(f"flower-superlink exited with code {link.returncode}; see {self.logs}/superlink.log")
            try:
                scheme, verify = ("https", str(self.tls.ca)) if self.tls else ("http", True)
                if httpx.get(f"{scheme}://127.0.0.1:{self.port}/health", timeout=0.5, verify=verify).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"flower-superlink did not answer within {START_TIMEOUT_S:.0f} s; see {self.logs}/superlink.log")

    def run_started(self) -> None:
        """Wake the SuperLink's SuperExec: `flwr run` has started a run, so its ServerApp task is waiting."""
        if self.link_bell is not None:
            ring(str(self.link_bell))

    def submit(self, overrides: list[str]) -> subprocess.Popen:
        """`flwr run <project> --stream` with the Hydra overrides as run config; its output is piped.

        Flower bundles a copy of the project's app files (`sim/deploy/app_files.py`: the same FAB,
        without walking `.venv/` and the data)."""
        run_config = f"overrides={json.dumps(' '.join(_quote(o) for o in overrides))} deployment=true"
        proc = subprocess.Popen(
            ["flwr", "run", str(self.app), CONNECTION, "--stream", "--run-config", run_config],
            cwd=self.base, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        """Stop every process started here (and their children: flwr-serverapp, flwr-clientapp) by pid."""
        def handles(procs: list[subprocess.Popen]) -> list[psutil.Process]:
            found = []
            for proc in procs:
                try:
                    found.append(psutil.Process(proc.pid))
                except psutil.NoSuchProcess:
                    pass
            return found

        # the SuperLink last (the others leave it, not it them), and the zygote once the processes it forked are gone
        last = [self.link, self.zygote.process if self.zygote else None]
        rest = [proc for proc in self.procs if proc not in last]
        for group in (rest, [proc for proc in last if proc is not None]):
            stop_trees(handles(group), timeout=5.0)
            for proc in group:
                proc.wait(timeout=10)
        if self.zygote is not None:
            self.zygote.close()
        shutil.rmtree(self.home, ignore_errors=True)
        if self.sockets is not None:
            shutil.rmtree(self.sockets, ignore_errors=True)


def _quote(override: str) -> str:
    """An override as one shell word (sim.config.compose splits the string like a shell)."""
    import shlex

    return shlex.quote(override)


def _follow(proc: subprocess.Popen, sink) -> threading.Thread:
    """Copy `proc`'s output lines to `sink` (the console) as they come."""
    def pump() -> None:
        for line in proc.stdout:
            sink(line.rstrip("\n"))

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _latest(history: Path) -> tuple[int, float | None]:
    """(last finished round, its central accuracy or None) from a growing history.csv."""
    try:
        lines = history.read_text().splitlines()
    except OSError:
        return 0, None
    if len(lines) < 2:
        return 0, None
    header, last = lines[0].split(","), lines[-1].split(",")
    row = dict(zip(header, last))
    acc = row.get("central_acc") or None
    return int(row["round"]), (float(acc) if acc else None)


def deploy(supernodes: int, user_overrides: list[str], base: Path, fast: bool = True, tls: bool = False) -> Path:
    """Run the experiment on a fresh deployment; returns the run directory (raises on failure).

    `fast`: SuperNodes that poll every 0.2 s and fork their ClientApps from a warm process
    (`sim.deploy.supernode`, `sim.deploy.warm_exec`); else Flower's own, a fresh
    `flwr-clientapp` per message. `tls`: the SuperLink serves TLS with certificates made for
    this deployment (`sim.deploy.certificates`); else insecure loopback."""
    overrides = run_overrides(user_overrides, supernodes)
    cfg, run_dir = check_config(overrides, supernodes)
    run_dir = (base / run_dir).resolve()
    overrides = [*overrides, f"hydra.run.dir={run_dir}"]
    deployment = Deployment(supernodes, base, logs=run_dir / "flower", fast=fast, tls=tls)
    try:
        deployment.start_superlink()
        print(f"run directory: {run_dir}", flush=True)
        submit = deployment.submit(overrides)  # flwr run imports and uploads while the zygote finishes importing
        deployment.start_supernodes()
        history, num_rounds = run_dir / "history.csv", int(cfg.num_rounds)
        with RoundProgress(num_rounds) as progress:
            def show(line: str) -> None:
                if RUN_STARTED in line:
                    deployment.run_started()
                progress._progress.console.print(line, markup=False, highlight=False)

            pump = _follow(submit, show)
            while submit.poll() is None and not (run_dir / "summary.json").exists():
                progress.update(*_latest(history))
                time.sleep(0.3)
            progress.update(*_latest(history))
            pump.join(timeout=2)
        if not (run_dir / "summary.json").exists():
            raise RuntimeError(f"the run ended without summary.json; finished rounds are in {history}")
        print(f"results in: {run_dir}", flush=True)
        return run_dir
    finally:
        deployment.stop()


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that `deploy`'s cleanup runs."""


def _terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--supernodes", type=int, required=True, help="SuperNodes to start (one client each)")
    parser.add_argument("--nodes", choices=("fast", "flower"), default="fast",
                        help="fast (default): SuperNodes poll every 0.2 s and fork ClientApps from a process "
                             "that imported the app once; flower: flower-supernode as Flower runs it "
                             "(3 s polls, a new flwr-clientapp process per message)")
    parser.add_argument("--tls", action="store_true",
                        help="TLS between flwr, the SuperLink and the SuperNodes, with a CA and certificate made "
                             "for this deployment (default: insecure loopback)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m sim")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[sim.deploy] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Ctrl-C stops it as it stops `python -m sim`, also when a background shell (`cmd &`, nohup) left SIGINT ignored
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _terminated),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        deploy(args.supernodes, list(args.overrides), Path.cwd(), fast=args.nodes == "fast", tls=args.tls)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Terminated) as stop:
        name = "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"
        print(f"interrupted by {name}: every SuperLink and SuperNode process started here was stopped; "
              "finished rounds, if any, are in history.csv", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0

