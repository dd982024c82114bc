"""GPU settings without a GPU, in-process: the task's device, AMP ignored on the CPU, and the
pure parts of `sim.bench.gpu_check` (arguments, overrides, nvidia-smi parsing).
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord

from helpers import compose_config
from sim.bench import gpu_check
from sim.federation.client_app import task_device, train_pack
from sim.federation.client_data import ClientData
from sim.federation.client_settings import ClientSettings
from sim.data import load_dataset
from sim.partition.schemes import partition_labels, split_validation
from sim.run.recipe import initial_model

NO_GPU = not torch.cuda.is_available()


# --- in process: where a task runs, and amp on the CPU ---------------------------------------


@pytest.mark.parametrize("use_gpu,cuda,expected", [
    (False, False, "cpu"), (False, True, "cpu"), (True, False, "cpu"), (True, True, "cuda"),
])
def test_task_device_needs_both_a_gpu_share_and_cuda(monkeypatch, use_gpu, cuda, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert task_device(use_gpu) == torch.device(expected)


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
    settings = ClientSettings.from_config(cfg)
    assert settings.use_gpu is True
    for amp in (False, True):
        config = ConfigRecord({"cids": [0, 1], "server-round": 1})
        results.append(train_pack(client_data, arrays, config, replace(settings, train=replace(settings.train, amp=amp))))
    (plain, plain_metrics), (amp, amp_metrics) = results
    assert plain_metrics["train_loss"] == amp_metrics["train_loss"]
    for key in plain:
        assert plain[key].dtype == torch.float32 and torch.equal(plain[key], amp[key]), key


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
