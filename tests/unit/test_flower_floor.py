"""`sim.bench.flower_floor`: the do-nothing Flower App whose first reply is Flower's own start floor."""

from __future__ import annotations

import math
import sys
import tomllib
import zipfile
from io import BytesIO

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from sim.bench import flower_floor


def test_the_project_is_a_flower_app_whose_components_load(tmp_path, monkeypatch):
    from flwr.cli.build import build_fab_from_disk
    from flwr.supercore.object_ref import load_app

    project = flower_floor.make_project(tmp_path / "app")
    fab = build_fab_from_disk(project)
    with zipfile.ZipFile(BytesIO(fab)) as bundle:
        assert bundle.read("flowerfloor/apps.py").decode() == open(flower_floor.__file__).read()
    monkeypatch.syspath_prepend(str(project))  # sys.path comes back after the test
    components = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"]
    try:
        assert isinstance(load_app(components["serverapp"], ValueError, str(project)), ServerApp)
        assert isinstance(load_app(components["clientapp"], ValueError, str(project)), ClientApp)
    finally:
        for name in ("flowerfloor.apps", "flowerfloor"):  # imported from this test's folder only
            sys.modules.pop(name, None)


def test_the_client_app_answers_a_query(task_identity):
    ask = Message(RecordDict({"ask": ConfigRecord({"a": 1})}), dst_node_id=1, message_type="query")
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    reply = flower_floor.client_app(ask, context)
    assert not reply.has_error() and reply.content["answer"]["b"] == 2


def test_first_reply_seconds_come_from_the_marks_file(tmp_path):
    marks = tmp_path / "marks.txt"
    assert math.isnan(flower_floor.first_reply_s(marks, 100.0))  # no run wrote it
    marks.write_text("something_else 101.000\nfirst_reply 112.500\n")
    assert flower_floor.first_reply_s(marks, 100.0) == 12.5
