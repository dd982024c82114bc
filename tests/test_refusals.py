"""Settings that cannot run are refused with one line (exit 2); the README's override lines run.

Resources that leave no client able to run (more CPUs or GPUs per client than a private
Ray would have, or than any node of an attached cluster has), and a Dirichlet partition
that flwr-datasets cannot draw, are user errors, not tracebacks. The README's "Common
overrides" lines are composed, validated and (for a Dirichlet split of CIFAR-10) drawn,
one by one and two at a time, as a new user would combine them.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shlex

import numpy as np
import pytest

from hydra import compose, initialize_config_dir

from conftest import CONF_DIR, REPO, TINY, compose_config, run_cli
from sim.config.rules import MIN_IMAGE_SIZE
from sim.errors import ConfigError
from sim.partition.schemes import PartitionError, partition_labels
from sim.federation.flower_internals import ray_cpu_count
from sim.config.validate import train_set_size, validate

CIFAR10_LABELS = np.repeat(np.arange(10), 5000)  # CIFAR-10's train labels: 5,000 of each class


def readme_override_lines() -> list[list[str]]:
    """The override arguments of every `python -m sim ...` line of the README's "Common overrides"."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Common overrides\s+```bash\n(.*?)```", text, re.S).group(1)
    lines = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("python -m sim ") and "--" not in line:
            lines.append(shlex.split(line)[3:])
    return lines


@functools.lru_cache(maxsize=None)
def _draw(num_clients: int, seed: int, alpha: float, min_size: int, balancing: bool) -> int:
    """The smallest client of a Dirichlet split of CIFAR-10's label counts (raises PartitionError)."""
    parts = partition_labels(CIFAR10_LABELS, "dirichlet", num_clients, seed, alpha=alpha,
                             min_partition_size=min_size, self_balancing=balancing)
    return min(len(p) for p in parts)


def _run_as_far_as_the_partition(overrides: list[str], composed: bool = False) -> str:
    """Compose, validate and (a Dirichlet split of built-in CIFAR-10) draw: 'ok' or the refusal.

    `composed`: Hydra is already initialised on conf/ (compose without initialising again).
    """
    cfg = compose("config", overrides=overrides) if composed else compose_config(overrides)
    try:
        validate(cfg)
        if cfg.partition.scheme == "dirichlet" and cfg.dataset.name == "cifar10" and train_set_size(cfg):
            p = cfg.partition
            assert _draw(int(cfg.num_clients), int(cfg.seed), float(p.alpha), int(p.min_partition_size),
                         bool(p.self_balancing)) >= p.min_partition_size
    except ConfigError as refusal:  # PartitionError is one: a refusal with guidance
        message = str(refusal)
        assert "\n" not in message and "=" in message.split(" ")[0], message
        return message
    return "ok"


@pytest.mark.slow  # no Ray, but 45 compositions and seven flwr-datasets draws: ~10 s of CPU
def test_readme_override_lines_run_alone_and_two_at_a_time():
    lines = readme_override_lines()
    assert len(lines) >= 8 and ["partition=dirichlet", "partition.alpha=0.3"] in lines
    outcomes = {}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for combo in [*([line] for line in lines), *itertools.combinations(lines, 2)]:
            overrides = [arg for line in combo for arg in line]
            outcomes[" ".join(overrides)] = _run_as_far_as_the_partition(overrides, composed=True)
    assert all(outcomes[" ".join(line)] == "ok" for line in lines), outcomes
    refused = {k: v for k, v in outcomes.items() if v != "ok"}
    # the one refusal: 1,000 clients on the smoke preset's 600 synthetic images (a clear one-line error)
    assert all("experiment=smoke" in k and v.startswith("num_clients=1000 is larger") for k, v in refused.items()), refused


def test_cross_device_label_skew_of_the_readme_draws_with_the_defaults():
    # the example: num_clients=1000 partition=dirichlet partition.alpha=0.3 (was a traceback)
    assert _run_as_far_as_the_partition(["num_clients=1000", "partition=dirichlet", "partition.alpha=0.3"]) == "ok"


def test_a_dirichlet_split_that_cannot_be_drawn_is_one_line_naming_the_settings():
    with pytest.raises(PartitionError) as info:
        partition_labels(CIFAR10_LABELS, "dirichlet", 1000, 0, alpha=0.3, min_partition_size=10, self_balancing=False)
    message = str(info.value)
    assert isinstance(info.value, ConfigError) and "\n" not in message
    assert message.startswith("partition.min_partition_size=10 ")
    for setting in ("partition.alpha=0.3", "num_clients=1000", "lower partition.min_partition_size"):
        assert setting in message, message


def test_more_cpus_per_client_than_a_private_ray_has_is_refused():
    cpus = ray_cpu_count()
    assert cpus == int(cpus) >= 1
    with pytest.raises(ConfigError, match=r"^resources\.client_cpus=\S+ is larger than the \d+ CPUs Ray finds"):
        validate(compose_config(["dataset=synthetic", f"resources.client_cpus={int(cpus) + 1}"]))
    validate(compose_config(["dataset=synthetic", f"resources.client_cpus={int(cpus)}"]))  # exactly all: fits
    # declared CPUs (Ray may be given more than the machine has) or a cluster: not this machine's count
    validate(compose_config(["dataset=synthetic", f"resources.client_cpus={int(cpus) + 1}",
                             f"resources.ray_cpus={int(cpus) + 1}"]))


def test_min_image_size_is_the_cnns_own_limit():
    from sim.models.cnn import Net

    Net(3, MIN_IMAGE_SIZE, 10)
    with pytest.raises(ValueError, match=f"needs >= {MIN_IMAGE_SIZE}"):
        Net(3, MIN_IMAGE_SIZE - 1, 10)
    with pytest.raises(ConfigError, match="dataset.image_size"):
        validate(compose_config(["dataset=synthetic", f"dataset.image_size={MIN_IMAGE_SIZE - 1}"]))


def _one_line_exit_2(result, key: str) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}="), result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_cli_refuses_a_dirichlet_split_that_cannot_be_drawn(tmp_path, data_dir):
    # 5,000 synthetic images over 400 clients: 12.5 each on average, so some client always has < 10
    result = run_cli([*TINY, f"dataset.data_dir={data_dir}", "dataset.num_train=5000", "num_clients=400",
                      "partition=dirichlet", "partition.alpha=0.3", "partition.min_partition_size=10"],
                     cwd=tmp_path, timeout=120)
    line = _one_line_exit_2(result, "partition.min_partition_size")
    assert "num_clients=400" in line and "partition.alpha=0.3" in line
    assert not list((tmp_path / "results").rglob("history.csv"))


@pytest.mark.slow
def test_cli_refuses_more_cpus_per_client_than_the_machine_has(tmp_path):
    result = run_cli([*TINY, f"resources.client_cpus={(os.cpu_count() or 1) + 1}"], cwd=tmp_path, timeout=60)
    _one_line_exit_2(result, "resources.client_cpus")
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.*"))


@pytest.mark.slow
def test_cli_refuses_a_client_no_node_of_an_attached_cluster_can_host(tmp_path, data_dir, ray_cluster_address):
    # the shared cluster has one node with 2 CPUs and no GPU
    for extra, key in ((["resources.client_cpus=3"], "resources.client_cpus"),
                       (["resources.client_gpus=0.5"], "resources.client_gpus")):
        cwd = tmp_path / key
        cwd.mkdir()
        result = run_cli([*TINY, f"dataset.data_dir={data_dir}", f"resources.address={ray_cluster_address}", *extra],
                         cwd=cwd, timeout=120)
        line = _one_line_exit_2(result, key)
        assert "fits on no node" in line and "2 CPUs and 0 GPUs" in line, line
        assert not list((cwd / "results").rglob("history.csv"))
