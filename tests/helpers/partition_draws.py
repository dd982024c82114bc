"""Running a config as far as its partition: validation, then a Dirichlet draw of CIFAR-10's labels."""

from __future__ import annotations

import functools

import numpy as np
from hydra import compose

from helpers import compose_config
from sim.config.validate import train_set_size, validate
from sim.errors import ConfigError
from sim.partition.schemes import partition_labels


CIFAR10_LABELS = np.repeat(np.arange(10), 5000)  # CIFAR-10's train labels: 5,000 of each class


@functools.lru_cache(maxsize=None)
def smallest_client(num_clients: int, seed: int, alpha: float, min_size: int, balancing: bool) -> int:
    """The smallest client of a Dirichlet split of CIFAR-10's label counts (raises PartitionError)."""
    parts = partition_labels(CIFAR10_LABELS, "dirichlet", num_clients, seed, alpha=alpha,
                             min_partition_size=min_size, self_balancing=balancing)
    return min(len(p) for p in parts)


def run_as_far_as_the_partition(overrides: list[str], composed: bool = False) -> str:
    """Compose, validate and (a Dirichlet split of built-in CIFAR-10) draw: 'ok' or the refusal.

    `composed`: Hydra is already initialised on conf/ (compose without initialising again).
    """
    cfg = compose("config", overrides=overrides) if composed else compose_config(overrides)
    try:
        validate(cfg)
        if cfg.partition.scheme == "dirichlet" and cfg.dataset.name == "cifar10" and train_set_size(cfg):
            p = cfg.partition
            assert smallest_client(int(cfg.num_clients), int(cfg.seed), float(p.alpha), int(p.min_partition_size),
                         bool(p.self_balancing)) >= p.min_partition_size
    except ConfigError as refusal:  # PartitionError is one: a refusal with guidance
        message = str(refusal)
        assert "\n" not in message and "=" in message.split(" ")[0], message
        return message
    return "ok"
