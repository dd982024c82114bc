"""This project bundled by Flower from the copy `sim.deploy` hands to `flwr run` (`sim.deploy.app_files`):
the same FAB, byte for byte, as Flower builds from the checkout itself (which walks `.venv/`: seconds)."""

from __future__ import annotations

from sim.deploy.app_files import stage_app
from sim.deploy.processes import PROJECT


def test_the_staged_project_bundles_into_the_projects_own_fab(tmp_path):
    from flwr.cli.build import build_fab_from_disk

    assert build_fab_from_disk(stage_app(PROJECT, tmp_path / "app")) == build_fab_from_disk(PROJECT)
