"""Composition of every option of every config group (Hydra's compose API, in-process)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from helpers.config_options import ALL_OPTIONS, GROUPS, options
from helpers import CONF_DIR, REPO, compose_config


def test_every_group_exists_and_has_options():
    for group in GROUPS:
        assert (CONF_DIR / group).is_dir()
    for group in GROUPS[:-1]:
        assert options(group), group


@pytest.mark.parametrize("group,option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_composes_and_resolves(group, option):
    cfg = compose_config([f"{group}={option}"])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    if group != "experiment":
        assert OmegaConf.to_container(cfg[group])
    for key, source in (("num_classes", "num_classes"), ("in_channels", "channels"), ("image_size", "image_size")):
        assert cfg.model.get(key, cfg.dataset[source]) == cfg.dataset[source]  # shape keys a model takes follow the data


def test_cli_contract_keys():
    cfg = compose_config(
        [
            "seed=3", "num_clients=7", "clients_per_round=2", "eval_clients_per_round=0", "num_rounds=4",
            "dataset=synthetic", "dataset.path=/tmp/x", "partition=dirichlet", "partition.alpha=0.3",
            "client.epochs=2", "client.batch_size=8", "client.lr=0.1",
            "resources.client_cpus=2", "resources.client_gpus=0.5",
        ]
    )
    assert (cfg.seed, cfg.num_clients, cfg.clients_per_round, cfg.eval_clients_per_round, cfg.num_rounds) == (3, 7, 2, 0, 4)
    assert cfg.dataset.name == "synthetic" and cfg.dataset.path == "/tmp/x"
    assert cfg.partition.scheme == "dirichlet" and cfg.partition.alpha == 0.3
    assert (cfg.client.epochs, cfg.client.batch_size, cfg.client.lr) == (2, 8, 0.1)
    assert (cfg.resources.client_cpus, cfg.resources.client_gpus) == (2, 0.5)


def test_defaults_are_the_documented_run():
    cfg = compose_config()
    assert cfg.dataset.name == "cifar10" and cfg.partition.scheme == "iid"
    assert cfg.num_clients == 100 and cfg.clients_per_round == 10
    assert cfg.strategy._target_ == "sim.federation.strategy.FedAvg"


def test_gpu_resources_inherit_cpu_settings():
    cfg = compose_config(["resources=gpu"])
    assert cfg.resources.client_gpus == 0.25 and cfg.resources.server_device == "cuda"
    assert cfg.resources.client_cpus == 1 and cfg.resources.address is None


def test_runs_go_under_results_without_chdir():
    cfg = compose_config(return_hydra_config=True)
    assert cfg.hydra.run.dir.startswith("results/")
    assert cfg.hydra.sweep.dir.startswith("results/multirun/")
    assert cfg.hydra.job.chdir is False


def test_every_yaml_key_has_a_comment():
    for path in CONF_DIR.rglob("*.yaml"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped.startswith("- ") or stripped.endswith(":"):
                continue
            if stripped.startswith("# @package"):
                continue
            assert "#" in line, f"{path.relative_to(REPO)}:{number} has no comment: {line!r}"
