"""The reference FedAvg loop as the harness's oracle, and `python -m sim.bench --quick`.

One quick bench run (real `python -m sim` in a subprocess: real Flower, real Ray) on the
`TINY` settings serves three checks: its bench.csv is checked, the reference, run here in
process on the same overrides, must reproduce its harness history, and so must the same
run with Flower's message pickup left unshimmed.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import TINY, compose_config, run_cli, run_dirs
from sim.bench.measure import METRIC_COLUMNS
from sim.bench.reference import run_reference
from sim.bench.workloads import workload_overrides
from sim.run.history import COLUMNS

pytestmark = pytest.mark.slow

COUNT_COLUMNS = ["round", "train_clients", "train_failures", "eval_clients", "eval_failures"]


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory, data_dir):
    """`python -m sim.bench --quick --workloads cross-silo` shrunk to TINY: 3 rounds of 3
    clients on 2 workers (packs of 2 and 1), federated evaluation on, central evaluation
    at rounds 0, 2 and 3, a quarter of the client tasks failing.
    Returns (extra overrides, output folder, CompletedProcess)."""
    cwd = tmp_path_factory.mktemp("bench")
    extras = [
        *TINY, "num_rounds=3", "central_eval_every=2", "client.failure_rate=0.25",
        f"dataset.data_dir={data_dir}", f"partition.dir={cwd / 'partitions'}",
    ]
    out = cwd / "out"
    result = run_cli(
        ["--quick", "--workloads", "cross-silo", "--rounds", "3", "--out", str(out), *extras],
        cwd=cwd, module="sim.bench",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return extras, out, result


@pytest.mark.parametrize("packs", [None, 2], ids=["one-float64-mean", "harness-order"])
def test_reference_history_matches_harness(quick_bench, tmp_path, packs):
    extras, out, _ = quick_bench
    overrides = workload_overrides("cross-silo", 3, None, quick=True, extra=extras)
    timings = run_reference(compose_config(overrides), tmp_path / "reference", packs=packs)

    harness = pd.read_csv(out / "cross-silo" / "harness" / "history.csv")
    reference = pd.read_csv(tmp_path / "reference" / "history.csv")
    assert tuple(reference.columns) == COLUMNS
    assert harness["round"].tolist() == reference["round"].tolist() == [0, 1, 2, 3]
    assert reference["central_acc"].notna().tolist() == [True, False, True, True]
    assert reference.loc[1:, "eval_clients"].tolist() == [2, 2, 2]
    pd.testing.assert_frame_equal(harness[COUNT_COLUMNS], reference[COUNT_COLUMNS])
    assert reference[["train_failures", "eval_failures"]].sum().sum() > 0  # faults were exercised
    for column in METRIC_COLUMNS:
        np.testing.assert_allclose(
            reference[column].to_numpy(float), harness[column].to_numpy(float), rtol=1e-4, err_msg=column
        )
    assert len(timings["train_s"]) == 4 and timings["train_s"][0] == 0.0
    assert all(t > 0 for t in timings["train_s"][1:]) and timings["central_s"][1] == 0.0


NO_SHIM = """
import runpy, sys
import sim.run.recipe
sim.run.recipe.remove_message_pickup_floor = lambda: False  # Flower's 0.1 s pickup left as it is
sys.argv[0] = "sim"
runpy.run_module("sim", run_name="__main__", alter_sys=True)
"""


def test_history_is_the_same_without_the_message_pickup_shim(quick_bench, tmp_path):
    """The bench's harness run (shim on) against the same run with Flower's 0.1 s pickup floor left in place.

    Failed replies and skipped central evaluations go through the shim too; the shim's own
    tests are in tests/unit/test_flower_internals.py.
    """
    extras, out, _ = quick_bench
    overrides = workload_overrides("cross-silo", 3, None, quick=True, extra=extras)
    # a private Ray of 2 CPUs, as the bench's run had: the same 2 packs, so the same sums
    result = subprocess.run([sys.executable, "-c", NO_SHIM, *overrides], cwd=tmp_path, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    (floor_dir,) = run_dirs(tmp_path)
    shim_line = "message pickup: event-driven"
    assert shim_line in (out / "cross-silo" / "harness.log").read_text()
    assert shim_line not in result.stdout + result.stderr
    shim = pd.read_csv(out / "cross-silo" / "harness" / "history.csv").drop(columns=["round_s", "elapsed_s"])
    floor = pd.read_csv(floor_dir / "history.csv").drop(columns=["round_s", "elapsed_s"])
    assert shim["round"].tolist() == [0, 1, 2, 3] and shim["train_failures"].sum() > 0
    pd.testing.assert_frame_equal(shim, floor, check_exact=True)


def test_reference_orders_agree_with_faults_and_empty_clients(tmp_path, data_dir):
    # Dirichlet(0.05) without a minimum leaves some clients without training examples.
    overrides = [
        *TINY, "num_clients=20", "clients_per_round=10", "eval_clients_per_round=4", "num_rounds=3",
        "partition=dirichlet", "partition.alpha=0.05", "partition.min_partition_size=0",
        "client.failure_rate=0.3", f"dataset.data_dir={data_dir}", f"partition.dir={tmp_path / 'partitions'}",
    ]
    cfg = compose_config(overrides)
    histories = []
    for packs in (None, 3):
        run_reference(cfg, tmp_path / str(packs), packs=packs)
        histories.append(pd.read_csv(tmp_path / str(packs) / "history.csv"))
    one_by_one, packed = histories
    pd.testing.assert_frame_equal(one_by_one[COUNT_COLUMNS], packed[COUNT_COLUMNS])
    for column in METRIC_COLUMNS:
        np.testing.assert_allclose(one_by_one[column].to_numpy(float), packed[column].to_numpy(float), rtol=1e-4)
    assert one_by_one["train_failures"].sum() > 0
    (manifest,) = (tmp_path / "partitions").glob("*.npz")
    assert (np.diff(np.load(manifest)["train_offsets"]) == 0).any()


def test_reference_refuses_other_strategies(tmp_path):
    with pytest.raises(ValueError, match="FedAvg only"):
        run_reference(compose_config([*TINY, "strategy=fedmedian"]), tmp_path)


def test_bench_quick_writes_table(quick_bench):
    _, out, result = quick_bench
    table = pd.read_csv(out / "bench.csv")
    expected = {
        "workload", "rounds", "workers", "harness_round_s", "reference_round_s", "reference_train_s",
        "reference_central_s", "bound_s", "ratio", "start_s", "worker_startup_s",
        "peak_pss_mb", "peak_uss_mb", "driver_pss_mb", "driver_own_mb", "max_rel_diff", "cpu_share", "load_1min", "returncode",
        "partition_s", "packed_bound_s", "packed_ratio", "parallel_reference_round_s", "parallel_ratio",
    }
    assert expected <= set(table.columns)
    row = table.iloc[0]
    assert row["workload"] == "cross-silo" and row["returncode"] == 0 and row["rounds"] == 3
    for key in ("harness_round_s", "reference_round_s", "bound_s", "ratio", "start_s", "peak_pss_mb", "partition_s"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["peak_uss_mb"] <= row["peak_pss_mb"] and 0 < row["driver_own_mb"] <= row["driver_pss_mb"] < row["peak_pss_mb"]
    assert row["packed_bound_s"] >= row["bound_s"]  # indivisible clients can only lengthen the ideal round
    assert row["max_rel_diff"] < 1e-4
    assert row["parallel_max_rel_diff"] == 0  # packs in parallel processes: the same history bit for bit  # the bench's own reference agrees with its harness run
    assert (out / "cross-silo" / "reference" / "history.csv").exists()
    assert "harness/bound" in result.stdout and "targets (not asserted)" in result.stdout


def test_bench_refuses_cifar_without_a_path(tmp_path):
    result = run_cli(["--workloads", "cross-silo"], cwd=tmp_path, module="sim.bench", env={"SIM_CIFAR10_ARCHIVE": ""})
    assert result.returncode == 2 and "--dataset-path" in result.stderr


def test_sweep_bench_reports_every_job_and_no_leftover_process(tmp_path, data_dir):
    out = tmp_path / "sweep"
    result = run_cli(["--jobs", "3", "--out", str(out), "num_rounds=3", "resources.ray_cpus=1", f"dataset.data_dir={data_dir}"],
                     cwd=tmp_path, module="sim.bench.sweep", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_csv(out / "sweep.csv")
    assert table["seed"].tolist() == [0, 1, 2] and (table["status"] == "completed").all()
    assert (table["driver_rss_mb"] > 0).all() and (table["median_round_s"] > 0).all()
    assert "driver RSS     job 3 / job 2" in result.stdout and "median round   job 3 / job 2" in result.stdout
    assert "processes of the sweep alive after it: 0" in result.stdout


def test_sweep_bench_refuses_too_few_jobs(tmp_path):
    result = run_cli(["--jobs", "2"], cwd=tmp_path, module="sim.bench.sweep", timeout=60)
    assert result.returncode == 2 and "--jobs=2" in result.stderr


def test_target_lines_compare_the_scale_pair_and_the_fresh_partition():
    from sim.bench.__main__ import target_lines

    table = pd.DataFrame([
        {"workload": "scale-5k", "num_clients": 5000, "harness_round_s": 0.100, "peak_pss_mb": 2000.0,
         "start_s": 7.0, "partition_s": 0.3},
        {"workload": "scale-50k", "num_clients": 50000, "harness_round_s": 0.120, "peak_pss_mb": 2300.0,
         "start_s": 12.0, "partition_s": 1.2},
    ])
    lines = target_lines(table)
    assert "scale-50k vs scale-5k median round +20.0%  target <= +15%  MISSED" in lines
    assert "scale-50k vs scale-5k peak memory +15.0%  target <= +10%  MISSED" in lines
    assert "scale-50k fresh partition of 50,000 clients 1.2 s  target <= 10 s  met" in lines
    assert "scale-5k start to first round 7.0 s  target <= 10 s  met" in lines
    assert "scale-50k start to first round 12.0 s  target <= 10 s  MISSED" in lines
