"""`python -m sim.deploy.warm_exec`: Flower's SuperExec for a SuperNode (or a SuperLink), with warm app processes.

    flower-supernode --isolation process --host 127.0.0.1 --port 9094 ...   # runs no ClientApp itself
    python -m sim.deploy.warm_exec --runtime-api-address 127.0.0.1:9094 --insecure --parent-pid <its pid>

A SuperNode in Flower's default isolation (`subprocess`) starts `flower-superexec`, which
starts a fresh `flwr-clientapp` process for every message: Python, Flower, torch and the
app are imported each time, about 3.5 s of CPU here before any training, for every client
of every round. This process is that SuperExec (Flower's own `run_superexec` loop: the
same task polling, tokens and Runtime API), with one change: a ClientApp task is run by
Flower's own `run_clientapp` in a process forked from a template that imported the
ClientApp's module once (`multiprocessing`'s forkserver, preloading
`sim.deploy.warm_template`: torch, Flower and Hydra come with it). Each task still gets a
process of its own, started from the same state, so what it computes is what a fresh
`flwr-clientapp` computes. The app code itself is not reused: each task first forgets
this project's modules, so it imports the app from the FAB Flower installed for its run,
as `flwr-clientapp` does; only the libraries stay imported. As the SuperExec of a
SuperLink started with `--isolation process`, it forks ServerApp tasks the same way, each
running Flower's `flwr-serverapp` main with the command line Flower would have given it.
Other task types, and runs that install dependencies at run time, go to Flower's own
`SubprocessExecutor`.
In a local deployment (`ZYGOTE_ENV` set) this process and its tasks are forked from the
deployment's zygote (`sim/deploy/zygote.py`), which preloaded the template: no template
of its own is started, and each task takes on this SuperExec's environment and log.
`sim.deploy` starts one for its SuperLink and one per SuperNode, beside
`sim.deploy.supernode`, each with a doorbell (`SIM_SUPEREXEC_DOORBELL`,
`sim/deploy/doorbell.py`): the SuperNode rings its SuperExec when a message has arrived,
`sim.deploy` rings the SuperLink's once `flwr run` has started the run, and between rings
a SuperExec polls only every `IDLE_POLL_S` instead of every `SUPEREXEC_POLL_S`.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import multiprocessing
import os
import sys
from typing import Any, Callable

import sim  # noqa: F401  (offline environment first)
from sim.deploy.doorbell import DOORBELL_ENV, IDLE_POLL_S, Doorbell
from sim.deploy.zygote import LOG_ENV, ZYGOTE_ENV, become, use_zygote
from sim.federation.flower_internals import run_superexec_with_executor, wait_between_task_polls

APP_PACKAGE = "sim"  # this project's top-level package: imported by every task from its FAB, never kept
TEMPLATE_MODULE = "sim.deploy.warm_template"  # the forkserver imports it once: the warm-up
SUPEREXEC_POLL_S = 0.2  # how often this SuperExec asks its SuperNode for a task without a doorbell (Flower: 1 s)
log = logging.getLogger("sim.deploy.warm_exec")


def forget_app_modules(package: str = APP_PACKAGE) -> list[str]:
    """Drop `package` and its submodules from `sys.modules` (the libraries they imported stay loaded)."""
    names = [name for name in sys.modules if name == package or name.startswith(package + ".")]
    for name in names:
        del sys.modules[name]
    return names


def run_task(runtime_api_address: str, token: str, insecure: bool, root_certificates_path: str | None,
             parent_pid: int | None, runner: Callable[..., None] | None = None,
             setup: tuple[dict[str, str], str | None] | None = None) -> None:
    """One ClientApp task in a forked process: `runner` (Flower's `run_clientapp`) called as `flwr-clientapp` calls it.

    `setup`: (environment, log file) of the SuperExec, for a task forked by a deployment's
    zygote (`sim.deploy.zygote`) rather than by this SuperExec's own template."""
    from flwr.supercore.tls import validate_and_resolve_root_certificates

    if setup is not None:
        become(*setup, title="flwr-clientapp (sim.deploy.warm_exec, forked by the zygote)")
    if runner is None:
        from flwr.supernode.runtime.run_clientapp import run_clientapp as runner
    forget_app_modules()  # the template's copy (and this module): the task imports the app from its FAB
    runner(
        runtime_api_address=runtime_api_address,
        token=token,
        insecure=insecure,
        certificates=validate_and_resolve_root_certificates(root_certificates_path, insecure),
        parent_pid=parent_pid,
        runtime_dependency_install=False,
    )


def run_serverapp_task(argv: list[str], setup: tuple[dict[str, str], str | None] | None = None) -> None:
    """One ServerApp task in a forked process: Flower's `flwr-serverapp` main, given the command line
    Flower's own executor would start it with (`argv`), and then the exit handlers a process runs.

    `setup`: as for `run_task`."""
    if setup is not None:
        become(*setup, title=" ".join(argv))
    forget_app_modules()  # the app comes from the run's FAB, as in a fresh flwr-serverapp
    from flwr.superlink.cli.flwr_serverapp import flwr_serverapp

    sys.argv = list(argv)
    try:
        flwr_serverapp()
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends its children with os._exit, which skips them


def serverapp_command(spec) -> list[str]:
    """The `flwr-serverapp` command line Flower's `SubprocessExecutor` builds for `spec`."""
    from flwr.supercore.constant import TASK_TYPE_TO_APPIO_API_ADDRESS_ARG, TASK_TYPE_TO_COMMAND

    argv = [TASK_TYPE_TO_COMMAND[spec.task_type], TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[spec.task_type],
            spec.runtime_api_address, "--token", spec.token]
    if spec.insecure:
        argv.append("--insecure")
    elif spec.root_certificates_path is not None:
        argv += ["--root-certificates", spec.root_certificates_path]
    if spec.parent_pid is not None:
        argv += ["--parent-pid", str(spec.parent_pid)]
    return argv


class WarmAppExecutor:
    """Flower's executor interface (`flwr.supercore.superexec.executor.types.Executor`): ClientApp and
    ServerApp tasks forked from a warm template, everything else handed to Flower's `SubprocessExecutor`."""

    def __init__(self, runner: Callable[..., None] | None = None):
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

        self._runner = runner  # what a task calls (default: Flower's run_clientapp); a module-level function
        self._fallback = SubprocessExecutor()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([TEMPLATE_MODULE])
        self._running: list[Any] = []
        self._broken = False
        self._forked = False
        self._setup: tuple[dict[str, str], str | None] | None = None  # what a task forked by a zygote takes on

    def start(self, zygote: str | None = None) -> None:
        """Start the template now (its imports take seconds), not at the first task; given a deployment's
        `zygote` (its socket, `sim.deploy.zygote`), fork the tasks there instead, already warm."""
        from multiprocessing import forkserver

        if zygote:
            use_zygote(zygote)
            self._setup = (dict(os.environ), os.environ.get(LOG_ENV))
        forkserver.ensure_running()

    def get_eligible_capacity(self, supported_task_types, *, insecure=False, root_certificates_path=None):
        """Every task type can start at once (as for Flower's subprocess executor)."""
        return self._fallback.get_eligible_capacity(supported_task_types, insecure=insecure,
                                                    root_certificates_path=root_certificates_path)

    def wait_for_capacity(self, task_type=None, *, fab_hash=None, insecure=False, root_certificates_path=None):
        """No capacity gate."""

    def launch(self, spec):
        """Fork a ClientApp or ServerApp task from the template; any other task (or a run that
        installs dependencies at run time) starts as Flower starts it."""
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.types import LaunchResult

        warm = (TaskType.CLIENT_APP, TaskType.SERVER_APP)
        if self._broken or spec.task_type not in warm or spec.runtime_dependency_install:
            return self._fallback.launch(spec)
        if spec.task_type == TaskType.SERVER_APP:
            process = self._context.Process(target=run_serverapp_task, name=f"flwr-serverapp-{spec.task_id}",
                                            args=(serverapp_command(spec), self._setup), daemon=False)
        else:
            process = self._context.Process(
                target=run_task, name=f"flwr-clientapp-{spec.task_id}", daemon=False,
                args=(spec.runtime_api_address, spec.token, spec.insecure, spec.root_certificates_path,
                      spec.parent_pid, self._runner, self._setup),
            )
        try:
            process.start()
        except (OSError, EOFError) as err:  # the template died (its warm-up failed): Flower's way from now on
            self._broken = True
            log.warning("warm ClientApp template unusable (%s: %s); starting flwr-clientapp afresh per task",
                        type(err).__name__, err)
            return self._fallback.launch(spec)
        if not self._forked:
            self._forked = True
            log.info("%s tasks are forked from the warm template %s%s (first: pid %d)",
                     getattr(spec.task_type, "value", spec.task_type), TEMPLATE_MODULE,
                     " in the deployment's zygote" if self._setup else "", process.pid)
        self._running.append(process)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap finished task processes."""
        self._running = [p for p in self._running if p.is_alive()]

    def close(self) -> None:
        """Nothing to release: running tasks finish on their own, and end with their SuperNode."""


def main(argv: list[str] | None = None) -> None:
    """Parse the same connection flags as `flower-superexec`; run Flower's SuperExec loop with warm ClientApps."""
    parser = argparse.ArgumentParser(prog="python -m sim.deploy.warm_exec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API (its --host:--port)")
    parser.add_argument("--insecure", action="store_true", help="connect without TLS (loopback)")
    parser.add_argument("--root-certificates", default=None, help="PEM CA file, when not --insecure")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the SuperNode) exits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[sim.deploy.warm_exec] %(message)s")
    poll_s = SUPEREXEC_POLL_S
    if os.environ.get(DOORBELL_ENV):  # woken by the SuperNode's rings, polling rarely otherwise
        doorbell = Doorbell(os.environ[DOORBELL_ENV])
        if wait_between_task_polls(doorbell.wait):
            poll_s = IDLE_POLL_S
            atexit.register(lambda: log.info("doorbell: woken %d times, %d polls of %.1f s without",
                                             doorbell.rings, doorbell.timeouts, IDLE_POLL_S))
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(poll_s))  # Flower's own knob
    executor = WarmAppExecutor()
    executor.start(zygote=os.environ.get(ZYGOTE_ENV))
    run_superexec_with_executor(executor, runtime_api_address=args.runtime_api_address, insecure=args.insecure,
                                root_certificates_path=args.root_certificates, parent_pid=args.parent_pid)


if __name__ == "__main__":
    main()
