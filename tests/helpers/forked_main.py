"""A `main` for tests of `sim.deploy.zygote`: forked from a zygote as `python -m helpers.forked_main OUT [superexec]`,
it records the state it started in to OUT (JSON); with `superexec` it also forks one ClientApp task
the way `sim.deploy.warm_exec` does in a deployment (in the zygote, `helpers.warm_tasks.record`)."""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import time
from pathlib import Path


def _task(out: Path) -> dict:
    """Fork one task through `WarmAppExecutor` given the zygote, as a deployment's SuperExec does; its state."""
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.types import ExecutionSpec

    from helpers import warm_tasks
    from sim.deploy.warm_exec import WarmAppExecutor
    from sim.deploy.zygote import ZYGOTE_ENV

    executor = WarmAppExecutor(runner=warm_tasks.record)
    executor.start(zygote=os.environ[ZYGOTE_ENV])
    token = out.with_suffix(".task.json")
    executor.launch(ExecutionSpec(task_type=TaskType.CLIENT_APP, runtime_api_address="127.0.0.1:9094",
                                  token=str(token), insecure=True, root_certificates_path=None,
                                  runtime_dependency_install=False, parent_pid=os.getpid(), suppress_output=True,
                                  task_id=1))
    deadline = time.monotonic() + 60
    while not token.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in executor._running:
        process.join(30)
    return json.loads(token.read_text())


def main() -> int:
    out = Path(sys.argv[1])
    logging.basicConfig(level=logging.INFO)  # as sim.deploy.warm_exec's main does
    atexit.register(lambda: print("exit handlers ran", file=sys.stderr))
    print("to stdout", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    state = {
        "pid": os.getpid(), "parent": os.getppid(), "argv": sys.argv, "cwd": os.getcwd(),
        "environment": {key: os.environ.get(key) for key in ("SIM_TEST_MARK", "SIM_ZYGOTE", "SIM_DEPLOY_LOG")},
        "title": Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode().strip(),
        "warm": [name for name in ("torch", "flwr.supernode.cli", "flwr.supercore.superexec.run_superexec")
                 if name in sys.modules],
    }
    if sys.argv[2:] == ["superexec"]:
        state["task"] = _task(out)
    out.write_text(json.dumps(state))
    return 3  # the exit code its launcher sees
