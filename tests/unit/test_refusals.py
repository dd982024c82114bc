"""Settings that cannot run are refused with one line, before any work (in-process).

Resources that leave no client able to run (more CPUs or GPUs per client than a private
Ray would have) and a Dirichlet partition that flwr-datasets cannot draw are user errors
with one line naming the settings, not tracebacks; the README's cross-device label-skew
example draws with the defaults.
"""

from __future__ import annotations

import pytest


from helpers.partition_draws import CIFAR10_LABELS, run_as_far_as_the_partition
from helpers import compose_config
from sim.config.rules import MIN_IMAGE_SIZE
from sim.errors import ConfigError
from sim.partition.schemes import PartitionError, partition_labels
from sim.federation.flower_internals import ray_cpu_count
from sim.config.validate import validate


def test_cross_device_label_skew_of_the_readme_draws_with_the_defaults():
    # the example: num_clients=1000 partition=dirichlet partition.alpha=0.3 (was a traceback)
    assert run_as_far_as_the_partition(["num_clients=1000", "partition=dirichlet", "partition.alpha=0.3"]) == "ok"


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
    with pytest.raises(ConfigError, match=r"^resources\.client_cpus=\S+ is larger than the \d+ CPUs? Ray finds"):
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
