"""The message-pickup shim end to end: a pair of runs with the shim on and off has the same history."""

from __future__ import annotations

import sys
import pandas as pd
import pytest

from helpers import TINY, run_dirs


NO_SHIM = """
import runpy, sys
import sim.run.recipe
sim.run.recipe.remove_message_pickup_floor = lambda: False  # Flower's 0.1 s pickup left as it is
sys.argv[0] = "sim"
runpy.run_module("sim", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_history_is_the_same_with_and_without_the_shim(tmp_path, data_dir, ray_cluster_address):
    import subprocess

    args = [*TINY, "num_rounds=3", "central_eval_every=2", "client.failure_rate=0.25",
            f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}"]
    histories, logs = {}, {}
    for name, command in (("shim", ["-m", "sim"]), ("floor", ["-c", NO_SHIM])):
        cwd = tmp_path / name
        cwd.mkdir()
        result = subprocess.run([sys.executable, *command, *args], cwd=cwd, capture_output=True, text=True,
                                timeout=240)
        assert result.returncode == 0, result.stderr[-3000:]
        logs[name] = result.stderr + result.stdout
        (run_dir,) = run_dirs(cwd)
        histories[name] = pd.read_csv(run_dir / "history.csv").drop(columns=["round_s", "elapsed_s"])
    shim_line = "message pickup: event-driven"
    assert shim_line in logs["shim"] and shim_line not in logs["floor"]
    assert histories["shim"]["round"].tolist() == [0, 1, 2, 3]
    assert histories["shim"]["train_failures"].sum() > 0  # failed replies went through the shim too
    pd.testing.assert_frame_equal(histories["shim"], histories["floor"], check_exact=True)
