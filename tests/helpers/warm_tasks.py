"""A stand-in for Flower's `run_clientapp` in tests of `sim.deploy.warm_exec`: it records the state it
was started in (a module-level function, so the forkserver can import it by name)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def pull_backoff() -> dict:
    """The first and longest wait between tries that a task's object pulls use."""
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree

    defaults = pull_and_inflate_object_from_tree.__kwdefaults__
    return {"initial_backoff": defaults["initial_backoff"], "backoff_cap": defaults["backoff_cap"]}


def record(*, runtime_api_address: str, token: str, insecure: bool, certificates, parent_pid,
           runtime_dependency_install: bool) -> None:
    """Write what a forked task sees to the file named by `token` (tests pass a path as the token)."""
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.supernode.runtime import run_clientapp

    state = {
        "pid": os.getpid(), "parent": os.getppid(), "address": runtime_api_address, "insecure": insecure,
        "app_modules": sorted(m for m in sys.modules if m == "sim" or m.startswith("sim.")),
        "torch_loaded": "torch" in sys.modules,
        "task_libraries_loaded": all(m in sys.modules for m in ("httpcore", "PIL.Image")),  # imported when a task runs
        "pull_backoff": pull_backoff(),  # shim 12, as the task's run_clientapp pulls its message with it
        "pickup_loop": vce_api.add_messages_to_queue.__module__,  # Flower's own unless a shim leaked from the template
        "runtime_dependency_install": runtime_dependency_install,
        "install_from_fab": run_clientapp.install_from_fab.__name__,  # what the task's run_clientapp installs with
        "environment_mark": os.environ.get("SIM_TEST_MARK"),  # whose environment the task has
    }
    print(f"task {os.getpid()} ran", flush=True)  # into its SuperExec's log
    tmp = Path(token).with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(token)
