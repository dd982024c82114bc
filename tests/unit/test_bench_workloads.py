"""Benchmark workloads (pfl-cifar10, cheap-rounds, the million-client pair), their target lines, the driver-memory probe."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from sim.bench import workloads as wl
from sim.bench.__main__ import final_central_acc, parse_args, target_lines


def test_pfl_cifar10_is_pfl_researchs_shape_for_1500_rounds_unless_told():
    cfg = wl.compose(wl.workload_overrides("pfl-cifar10", None, "/data/cifar10.tar.gz", quick=False))
    assert (cfg.dataset.name, cfg.num_clients, cfg.clients_per_round, cfg.num_rounds) == ("cifar10", 1000, 50, 1500)
    assert (cfg.partition.scheme, cfg.partition.val_fraction) == ("iid", 0)  # 50,000 images: 50 a client, all train
    assert (cfg.client.epochs, cfg.client.batch_size, cfg.client.momentum, cfg.client.weight_decay) == (1, 10, 0, 0)
    assert (cfg.central_eval_every, cfg.eval_clients_per_round) == (10, 0)
    assert cfg.strategy._target_.endswith("FedAvg")
    assert wl.compose(wl.workload_overrides("pfl-cifar10", 30, "/d.tar.gz", quick=False)).num_rounds == 30
    other = wl.compose(wl.workload_overrides("cross-device", None, "/d.tar.gz", quick=False))
    assert other.num_rounds == 10  # the other workloads keep their 10 rounds


def test_rounds_default_to_the_workloads_own():
    args = parse_args(["--workloads", "pfl-cifar10,scale-5k", "--dataset-path", "/d.tar.gz"])
    assert args.rounds is None and args.workloads == ["pfl-cifar10", "scale-5k"]
    with pytest.raises(SystemExit):
        parse_args(["--workloads", "pfl-cifar10", "--rounds", "2", "--quick"])


def test_target_line_compares_wall_time_and_shows_both_accuracies():
    row = {"workload": "pfl-cifar10", "rounds": 30, "num_clients": 1000, "harness_wall_s": 60.0,
           "reference_wall_s": 50.0, "wall_ratio": 1.2, "final_acc": 0.3012, "reference_final_acc": 0.3012,
           "start_s": 8.0, "peak_pss_mb": 2100.0}
    lines = target_lines(pd.DataFrame([row]))
    assert ("pfl-cifar10 30 rounds: wall time harness 60.0 s (launch to exit) / reference 50.0 s = 1.20  "
            "target <= 1.15  MISSED; final central accuracy harness 0.3012, reference 0.3012") in lines


def test_final_central_acc_is_the_last_measured_one():
    history = pd.DataFrame({"round": [0, 1, 2, 3], "central_acc": [0.1, None, 0.25, None]})
    assert final_central_acc(history) == 0.25


def test_cheap_rounds_brings_its_own_data_and_needs_no_cifar_path(monkeypatch):
    cfg = wl.compose(wl.workload_overrides("cheap-rounds", None, None, quick=False))
    assert (cfg.dataset.name, cfg.dataset.num_train, cfg.num_clients, cfg.clients_per_round) == ("synthetic", 2000, 100, 10)
    assert (cfg.num_rounds, cfg.eval_clients_per_round, cfg.central_eval_every) == (200, 0, 0)
    monkeypatch.delenv("SIM_CIFAR10_ARCHIVE", raising=False)
    assert parse_args(["--workloads", "cheap-rounds"]).dataset_path is None  # no SystemExit
    lines = target_lines(pd.DataFrame([{"workload": "cheap-rounds", "harness_round_s": 0.0123, "start_s": 5.0,
                                        "peak_pss_mb": 1900.0}]))
    assert "cheap-rounds median round 12.3 ms  target < 15 ms  met" in lines


def test_the_million_client_workload_and_its_5000_client_twin_differ_only_in_client_count():
    big, base = (wl.compose(wl.workload_overrides(n, None, None, quick=False)) for n in ("scale-1m", "scale-1m-base"))
    assert (big.num_clients, big.dataset.num_train, base.num_clients, base.dataset.num_train) == (
        1_000_000, 1_000_000, 5000, 5000)  # one image per client in both
    for cfg in (big, base):
        assert (cfg.dataset.name, cfg.dataset.channels, cfg.dataset.image_size) == ("synthetic", 1, 16)
        assert (cfg.clients_per_round, cfg.central_eval_every, cfg.partition.scheme) == (50, 0, "iid")
    lines = target_lines(pd.DataFrame([
        {"workload": "scale-1m-base", "harness_round_s": 0.100, "driver_own_mb": 600.0, "start_s": 7.0},
        {"workload": "scale-1m", "harness_round_s": 0.110, "driver_own_mb": 700.0, "start_s": 9.0},
    ]))
    assert "scale-1m vs scale-1m-base median round +10.0%  target <= +15%  met" in lines
    assert "scale-1m vs scale-1m-base driver memory (less the object store) +16.7%  target <= +10%  MISSED" in lines
    faster = target_lines(pd.DataFrame([{"workload": "scale-1m-base", "harness_round_s": 0.100},
                                        {"workload": "scale-1m", "harness_round_s": 0.080}]))
    assert "scale-1m vs scale-1m-base median round -20.0%  target <= +15%  met" in faster  # cheaper is fine


def test_the_drivers_shared_memory_is_what_it_maps_from_tmpfs(tmp_path):
    """The bench subtracts it from the driver's PSS: Ray's object store, holding the data set."""
    from multiprocessing import shared_memory

    from sim.bench.measure import shared_memory_pss

    before = shared_memory_pss(os.getpid())
    block = shared_memory.SharedMemory(create=True, size=32 * 2**20)
    try:
        block.buf[:] = b"\x01" * block.size  # touch every page
        assert shared_memory_pss(os.getpid()) - before >= 30 * 2**20
    finally:
        block.close()
        block.unlink()
    assert shared_memory_pss(2**22 + 12345) == 0  # no such process: unknown, not an error


def test_the_ratio_target_line_shows_the_packed_bound_and_the_parallel_reference_beside_it():
    lines = target_lines(pd.DataFrame([{"workload": "resnet-cross-device", "ratio": 1.31, "packed_ratio": 1.04,
                                         "parallel_ratio": 1.02}]))
    assert ("resnet-cross-device harness/bound 1.31  target <= 1.15  MISSED  "
            "(harness/packed bound 1.04; harness/parallel reference 1.02)") in lines


def test_flwr_run_in_the_bench_gets_the_client_resources_python_m_sim_uses():
    # Flower's default is 2 CPUs a client: on 2 CPUs one client at a time, against python -m sim's two
    from sim.bench.flwr_paths import simulation_resources

    assert simulation_resources(["dataset=synthetic"]) == "client-resources-num-cpus=1 client-resources-num-gpus=0.0"
    assert simulation_resources(["resources.client_cpus=2", "resources.client_gpus=0.5", "resources.ray_gpus=1"]) == (
        "client-resources-num-cpus=2 client-resources-num-gpus=0.5")
