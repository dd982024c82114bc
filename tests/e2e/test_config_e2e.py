"""The CLI contract: `python -m sim --cfg job` prints the job config of every config option."""

from __future__ import annotations

import pytest

from helpers.config_options import ALL_OPTIONS
from helpers import run_cli


@pytest.mark.slow  # a `python -m sim` subprocess each
@pytest.mark.parametrize("group,option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_cli_prints_job_config_for_every_option(group, option, tmp_path):
    result = run_cli([f"{group}={option}", "--cfg", "job", "--resolve"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "num_clients:" in result.stdout and "seed:" in result.stdout
    assert not (tmp_path / "results").exists()  # --cfg runs nothing
