"""The CLI contract: `python -m sim --cfg job` prints the job config of every config option.

The options run in one interpreter as `python -m sim` runs them (`helpers.run_cli_batch`);
one also in a process of its own.
"""

from __future__ import annotations

import pytest

from helpers import run_cli, run_cli_batch
from helpers.config_options import ALL_OPTIONS


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> dict[str, tuple]:
    """{"group=option": (CompletedProcess, its working directory)} of `--cfg job --resolve` for every option."""
    cases = [([f"{g}={o}", "--cfg", "job", "--resolve"], tmp_path_factory.mktemp("cfg")) for g, o in ALL_OPTIONS]
    results = run_cli_batch(cases)
    return {args[0]: (result, cwd) for (args, cwd), result in zip(cases, results)}


@pytest.mark.parametrize("group,option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_cli_prints_job_config_for_every_option(group, option, printed):
    _assert_printed(*printed[f"{group}={option}"])


def test_cli_prints_job_config_in_its_own_process(tmp_path):
    _assert_printed(run_cli(["strategy=fedprox", "--cfg", "job", "--resolve"], cwd=tmp_path, timeout=60), tmp_path)


def _assert_printed(result, tmp_path) -> None:
    assert result.returncode == 0, result.stderr
    assert "num_clients:" in result.stdout and "seed:" in result.stdout
    assert not (tmp_path / "results").exists()  # --cfg runs nothing
