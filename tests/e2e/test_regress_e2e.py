"""`python -m sim.regress` as a subprocess: exit 1 on a curve outside the band, exit 2 on a missing run."""

from __future__ import annotations

import pytest

from helpers.regress import CLI_SEEDS, baseline, write_run
from helpers import REPO, run_cli


# --- command line -------------------------------------------------------------------------


@pytest.mark.slow  # a `python -m sim.regress` subprocess
def test_cli_as_a_subprocess(tmp_path, baseline):
    low = write_run(tmp_path / "low", [a / 10 for a in CLI_SEEDS[0]])
    result = run_cli([str(low), "--baseline", str(baseline)], cwd=REPO, module="sim.regress", timeout=60)
    assert result.returncode == 1, result.stderr
    assert "FAIL: 4 points" in result.stdout and "central_acc" in result.stdout
    missing = run_cli(["check", str(tmp_path / "nowhere"), "--baseline", str(baseline)],
                      cwd=REPO, module="sim.regress", timeout=60)
    assert missing.returncode == 2 and "no history.csv found" in missing.stderr
