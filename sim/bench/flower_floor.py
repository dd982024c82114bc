"""Flower's own start floor: the least a Simulation Runtime round needs, and nothing of the harness.

`sim.bench.flwr_paths --paths ...,flower-floor` runs this module as a Flower App of its own
(`make_project` writes it, with its pyproject.toml, into a folder of its own): the ServerApp
sends one `query` message to one simulated SuperNode and waits for its reply; the ClientApp
answers it. No torch, no data, no Hydra. The bench times launch to that first reply, beside
`flwr run .`'s launch to the harness's round 0, and times Flower's CLI listing this checkout
(`listing_s`, which `flwr run .` does before it submits the run, and which the floor app's
small folder skips). Together they are the part of the start no Flower App can go below.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

FIRST_REPLY = "first_reply"  # the mark the ServerApp writes, with the time, when the reply is in
PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "flowerfloor"
version = "1.0.0"
dependencies = ["flwr"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "sim-bench"

[tool.flwr.app.components]
serverapp = "flowerfloor.apps:server_app"
clientapp = "flowerfloor.apps:client_app"

[tool.flwr.app.config]
marks = ""
"""

server_app = ServerApp()
client_app = ClientApp()


def _mark(context: Context, what: str) -> None:
    with open(str(context.run_config["marks"]), "a") as marks:
        marks.write(f"{what} {time.time():.3f}\n")


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    nodes: list[int] = []
    while not nodes:
        nodes = list(grid.get_node_ids())
        time.sleep(0.05)
    ask = Message(RecordDict({"ask": ConfigRecord({"a": 1})}), dst_node_id=nodes[0], message_type="query")
    reply = next(iter(grid.send_and_receive([ask])))
    if reply.has_error():
        raise RuntimeError(f"the floor app's ClientApp failed: {reply.error}")
    _mark(context, FIRST_REPLY)


@client_app.query()
def _answer(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"answer": ConfigRecord({"b": 2})}), reply_to=msg)


def make_project(dest: Path) -> Path:
    """Write this module as a Flower App project (`dest/pyproject.toml`, `dest/flowerfloor/apps.py`)."""
    package = dest / "flowerfloor"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    shutil.copyfile(__file__, package / "apps.py")
    (dest / "pyproject.toml").write_text(PYPROJECT)
    return dest


def first_reply_s(marks: Path, launched_wall: float) -> float:
    """Seconds from launch to the floor app's first reply, from its marks file (NaN when none)."""
    try:
        for line in marks.read_text().splitlines():
            what, when = line.split()
            if what == FIRST_REPLY:
                return float(when) - launched_wall
    except OSError:
        pass
    return float("nan")


def listing_s(project: Path) -> float:
    """Seconds Flower's CLI takes to list `project`'s files and filter them for its FAB, as `flwr run` does."""
    from flwr.cli.utils import collect_files, filter_paths_for_publish

    started = time.perf_counter()
    filter_paths_for_publish(collect_files(project))
    return time.perf_counter() - started
