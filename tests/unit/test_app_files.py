"""`sim.deploy.app_files.stage_app`: the app's files copied for `flwr run`, bundled by Flower into the same FAB.

On a small project made here with every kind of file Flower's rules treat differently;
tests/e2e/test_app_bundle.py does the same on this project.
"""

from __future__ import annotations

import os
from pathlib import Path

from sim.deploy.app_files import stage_app

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "demo"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "demo"

[tool.flwr.app.components]
serverapp = "demo.server:app"
clientapp = "demo.client:app"
"""


def _project(root: Path) -> Path:
    files = {
        "pyproject.toml": PYPROJECT,
        ".gitignore": ".venv/\n__pycache__/\n/results/*\n!/results/README.md\n/data/\n*.log\n",
        "demo/__init__.py": "", "demo/server.py": "app = None\n", "demo/client.py": "app = None\n",
        "demo/test_server.py": "# Flower leaves tests out\n", "demo/conf/base.yaml": "lr: 0.1\n",
        "demo/notes.txt": "not a type Flower keeps\n", "demo/run.log": "ignored\n",
        "results/README.md": "kept by a ! pattern\n", "results/2026/history.json": "{}\n",
        "data/cache.json": "{}\n", ".venv/lib/site.py": "x = 1\n", "demo/__pycache__/server.py": "",
        ".flwr/state.toml": "", ".git/hooks/hook.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    os.symlink(root / "demo" / "server.py", root / "demo" / "linked.py")
    return root


def test_flower_bundles_the_staged_copy_into_the_same_fab(tmp_path):
    from flwr.cli.build import build_fab_from_disk

    project = _project(tmp_path / "demo-app")
    staged = stage_app(project, tmp_path / "staged")
    assert build_fab_from_disk(staged) == build_fab_from_disk(project)


def test_folders_flower_would_drop_whole_are_not_copied(tmp_path):
    staged = stage_app(_project(tmp_path / "demo-app"), tmp_path / "staged")
    copied = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert ".venv/lib/site.py" not in copied and "data/cache.json" not in copied  # never walked
    assert "results/2026/history.json" not in copied and "demo/__pycache__/server.py" not in copied
    assert "results/README.md" in copied  # under /results/*, re-included by !/results/README.md
    assert "demo/notes.txt" not in copied and "demo/linked.py" not in copied  # not a kept type; a symlink
    assert {"pyproject.toml", ".gitignore", "demo/server.py", "demo/conf/base.yaml"} <= set(copied)
