"""GPU shares on a machine without a GPU: logical GPUs in a private Ray, CPU fallbacks, refusals.

Ray can be told it has GPUs it cannot see (`resources.ray_gpus=1`); it then packs client
tasks by their GPU share exactly as on a GPU machine, while each task, finding no CUDA,
trains on the CPU. Four stragglers that sleep 2 s each make the packing visible: at a
quarter GPU each, a round takes about 2 s (one after another it would take 8 s). That run
also names a dead RAY_ADDRESS, which a private Ray (`resources.address=null`) must ignore.
`sim.bench.gpu_check` itself needs a GPU; here only its refusal and pure parts run.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord

from conftest import TINY, compose_config, run_cli, run_dirs
from sim.bench import gpu_check
from sim.federation.client_app import task_device, train_pack
from sim.federation.client_data import ClientData
from sim.data import load_dataset
from sim.partition.schemes import partition_labels, split_validation
from sim.run.recipe import client_config, initial_model

NO_GPU = not torch.cuda.is_available()
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="checks the behaviour without a visible GPU")
STRAGGLE_S = 2.0
LOGICAL_GPU = ["resources.ray_gpus=1", "resources.ray_cpus=4", "resources.server_device=cpu"]


# --- in process: where a task runs, and amp on the CPU ---------------------------------------


@pytest.mark.parametrize("use_gpu,cuda,expected", [
    (False, False, "cpu"), (False, True, "cpu"), (True, False, "cpu"), (True, True, "cuda"),
])
def test_task_device_needs_both_a_gpu_share_and_cuda(monkeypatch, use_gpu, cuda, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert task_device(ConfigRecord({"use-gpu": use_gpu})) == torch.device(expected)
    assert task_device(ConfigRecord({})) == torch.device("cpu")


def test_amp_is_ignored_on_the_cpu(monkeypatch, data_dir):
    """A GPU share with no CUDA trains on the CPU, where bf16 autocast is off: bit-identical weights."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_config(["dataset=synthetic", "dataset.num_train=200", "dataset.num_test=50",
                          "client.batch_size=16", "resources.client_gpus=0.25", f"dataset.data_dir={data_dir}"])
    data = load_dataset(cfg.dataset, 0)
    train, val = split_validation(partition_labels(data.train_labels, "iid", 2, seed=0), 0.25, seed=0)
    offsets = lambda parts: np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    client_data = ClientData(data.train_images, data.train_labels, np.concatenate(train).astype(np.int64),
                             offsets(train), np.concatenate(val).astype(np.int64), offsets(val))
    arrays = ArrayRecord(initial_model(cfg).state_dict())
    results = []
    for amp in (False, True):
        config = client_config(cfg)
        assert config["use-gpu"] is True
        config.update({"cids": [0, 1], "server-round": 1, "amp": amp})
        results.append(train_pack(client_data, arrays, config))
    (plain, plain_metrics), (amp, amp_metrics) = results
    assert plain_metrics["train_loss"] == amp_metrics["train_loss"]
    for key in plain:
        assert plain[key].dtype == torch.float32 and torch.equal(plain[key], amp[key]), key


# --- the CLI without a GPU -------------------------------------------------------------------


@pytest.mark.slow
@needs_no_gpu
@pytest.mark.parametrize("overrides", [["resources.client_gpus=0.25"], ["resources=gpu"]])
def test_gpu_share_without_gpu_is_refused_with_one_line(tmp_path, overrides):
    result = run_cli(overrides, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: resources.client_gpus=0.25 needs a GPU"), result.stderr


@pytest.mark.slow
@needs_no_gpu
def test_gpu_check_fails_fast_without_gpu(tmp_path):
    result = run_cli(["--dataset-path", str(tmp_path / "none.tar.gz"), "--out", str(tmp_path / "out")],
                     cwd=tmp_path, timeout=60, module="sim.bench.gpu_check")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA GPU is visible"), result.stderr
    assert not (tmp_path / "out").exists()


def test_gpu_check_arguments_and_overrides():
    args = gpu_check.parse_args(["--dataset-path", "c.tar.gz", "--fractions", "1,0.1", "--amp", "--out", "o"])
    assert args.fractions == [1.0, 0.1] and args.rounds == 5
    cfg = compose_config(gpu_check.fraction_overrides(args, 0.1, 16))
    assert (cfg.num_clients, cfg.clients_per_round, cfg.client.batch_size) == (1000, 50, 10)  # cross-device
    assert cfg.resources.client_gpus == 0.1 and cfg.resources.server_device == "cuda"
    assert (cfg.resources.client_cpus, cfg.resources.ray_cpus, cfg.client.amp) == (1, 16, True)
    assert cfg.dataset.path == "c.tar.gz" and cfg.num_rounds == 5
    for bad in ("0", "1.5", "a", ""):
        with pytest.raises(ValueError, match="--fractions"):
            gpu_check.parse_fractions(bad)


def test_gpu_check_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as stop:
        gpu_check.parse_args(["--help"])
    assert stop.value.code == 0 and "--fractions" in capsys.readouterr().out


def test_nvidia_smi_lines_are_parsed_and_split_per_process():
    text = "1234, 517\n99, 20480\n[N/A], [N/A]\nNo running processes found\n"
    assert gpu_check.parse_compute_apps(text) == {1234: 517.0, 99: 20480.0}
    assert gpu_check.parse_compute_apps("") == {}
    sampler = gpu_check.GpuMemorySampler()
    sampler.peaks = {1: 500.0, 2: 700.0, 3: 900.0, os.getpid(): 100.0}
    sampler.commands = {1: ["python", "-m", "sim", "num_rounds=5"], 2: ["ray::ClientAppActor"], 3: []}
    assert sampler.split() == ([700.0, 900.0], 500.0)  # driver apart, this process left out


# --- logical GPUs in a private Ray ----------------------------------------------------------


@pytest.mark.slow  # starts a private Ray
def test_clients_at_once_follow_the_gpu_share_and_the_cpus():
    """Flower's pool arithmetic on a Ray told of 1 GPU and 4 CPUs: min(4 / 1, 1 / client_gpus)."""
    from sim.federation.ray_runtime import concurrency, ray_session

    expected = {1.0: 1, 0.5: 2, 0.25: 4, 0.1: 4}  # at 0.1 the 4 CPUs are the limit, not the GPU's 10
    base = compose_config(LOGICAL_GPU).resources
    with ray_session(base, verbose=False):
        for share, workers in expected.items():
            resources = compose_config([*LOGICAL_GPU, f"resources.client_gpus={share}"]).resources
            assert concurrency(resources) == workers, share


@pytest.mark.slow
def test_quarter_gpu_runs_four_clients_at_once(tmp_path, data_dir):
    """Two rounds of 4 FedMedian clients (one message each) that all sleep STRAGGLE_S."""
    overrides = [
        *TINY, "clients_per_round=4", "eval_clients_per_round=0", "strategy=fedmedian",
        "client.straggler_rate=1.0", f"client.straggler_delay_s={STRAGGLE_S}",
        "resources.client_gpus=0.25", *LOGICAL_GPU, f"dataset.data_dir={data_dir}",
    ]
    # a private Ray even where RAY_ADDRESS (or a `ray start` on this machine) names another cluster
    result = run_cli(overrides, cwd=tmp_path, timeout=150, env={"RAY_ADDRESS": "127.0.0.1:9"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "clients running at once: 4" in result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path)
    history = pd.read_csv(run_dir / "history.csv")
    assert history["round"].tolist() == [0, 1, 2]
    assert history.loc[1:, "train_clients"].tolist() == [4, 4]
    assert (history.loc[1:, "train_failures"] == 0).all()  # every task ran (on the CPU: no CUDA here)
    # round 1 includes Ray's worker start-up; round 2 is the four sleeps side by side (8 s one by one)
    assert STRAGGLE_S <= history.loc[2, "round_s"] < 2 * STRAGGLE_S
