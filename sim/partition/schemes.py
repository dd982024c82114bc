"""Client partitions: which train examples each virtual client holds.

`partition_labels` runs a flwr-datasets partitioner over an in-memory label column and
returns one index array per client; `split_validation` holds out part of each client's
share for federated evaluation. Both are pure functions of their arguments and the seed.

Every scheme first shuffles the column with `seed` exactly as `FederatedDataset` does
(`Dataset.shuffle(seed)` is `np.random.default_rng(seed).permutation(n)`); the same seed
goes into the partitioner. Indices returned always refer to the original, unshuffled
label array. Caching the result on disk is `sim.partition.manifest`'s job.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.federation.flower_internals import partitioner_index_map

if TYPE_CHECKING:  # flwr-datasets (and pyarrow behind it) load only when a split is computed
    from flwr_datasets.partitioner import Partitioner

from sim.errors import ConfigError

log = logging.getLogger(__name__)
DIRICHLET_GAVE_UP = "max number of attempts"  # flwr-datasets' DirichletPartitioner after 10 failed draws


class PartitionError(ConfigError, ValueError):
    """flwr-datasets cannot draw this partition: one line naming the settings to change (exit 2)."""

# Scheme -> the `partition.*` keys it takes (besides scheme, val_fraction and dir).
SCHEME_PARAMS: dict[str, tuple[str, ...]] = {
    "iid": (),
    "dirichlet": ("alpha", "min_partition_size", "self_balancing"),
    "shard": ("shards_per_client", "shard_size"),
    "pathological": ("classes_per_client", "class_assignment_mode"),
    "natural": ("by",),  # one client per distinct value of an id column (sim.partition.natural)
    "linear": (), "square": (), "exponential": (),  # client i gets a share ~ i, i^2, e^i (flwr-datasets)
    "inner_dirichlet": ("alpha", "sizes"),  # fixed sizes, Dirichlet(alpha) classes inside each
}


def _iid(perm: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """`IidPartitioner`: contiguous `Dataset.shard(num_clients, i)` of the shuffled column.

    Same arithmetic as `datasets.Dataset.shard(contiguous=True)`: the first `n % N`
    clients get one example more than the others.
    """
    div, mod = divmod(len(perm), num_clients)
    sizes = np.full(num_clients, div, dtype=np.int64)
    sizes[:mod] += 1
    return np.split(perm.astype(np.int64), np.cumsum(sizes)[:-1])


def _make_partitioner(
    scheme: str, num_clients: int, seed: int, params: dict[str, Any]
) -> Partitioner:
    """Build the flwr-datasets partitioner of a non-IID scheme from the yaml parameters."""
    from flwr_datasets.partitioner import (
        DirichletPartitioner, ExponentialPartitioner, InnerDirichletPartitioner, LinearPartitioner,
        PathologicalPartitioner, ShardPartitioner, SquarePartitioner,
    )

    sized = {"linear": LinearPartitioner, "square": SquarePartitioner, "exponential": ExponentialPartitioner}
    if scheme in sized:
        return sized[scheme](num_partitions=num_clients)
    if scheme == "inner_dirichlet":
        return InnerDirichletPartitioner(
            partition_sizes=params["sizes"], partition_by="label", alpha=float(params["alpha"]),
            shuffle=True, seed=seed,
        )
    if scheme == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_clients, partition_by="label", alpha=float(params["alpha"]),
            min_partition_size=params["min_partition_size"],
            self_balancing=params["self_balancing"], seed=seed,
        )
    if scheme == "shard":
        return ShardPartitioner(
            num_partitions=num_clients, partition_by="label",
            num_shards_per_partition=params["shards_per_client"],
            shard_size=params["shard_size"], seed=seed,
        )
    return PathologicalPartitioner(
        num_partitions=num_clients, partition_by="label",
        num_classes_per_partition=params["classes_per_client"],
        class_assignment_mode=params["class_assignment_mode"], seed=seed,
    )


def partition_labels(
    labels: np.ndarray, scheme: str, num_clients: int, seed: int, ids: np.ndarray | None = None, **params: Any
) -> list[np.ndarray]:
    """Split example indices `0..len(labels)-1` across `num_clients` clients.

    `scheme` is one of `iid`, `dirichlet`, `shard`, `pathological`; `params` are that
    scheme's keys of `conf/partition/<scheme>.yaml` (see `SCHEME_PARAMS`); `natural` also
    takes `ids`, the id column `partition.by` names (`sim.partition.natural`). Returns one
    int64 index array per client in the partitioner's order. Raises a one-line
    `ValueError` naming the config keys when flwr-datasets rejects the parameters.
    """
    labels = np.asarray(labels)
    if scheme not in SCHEME_PARAMS:
        raise ValueError(f"partition.scheme={scheme!r} is not one of {sorted(SCHEME_PARAMS)}")
    missing = set(SCHEME_PARAMS[scheme]) - set(params)
    unknown = set(params) - set(SCHEME_PARAMS[scheme])
    if missing or unknown:
        keys = ", ".join(f"partition.{k}" for k in sorted(missing | unknown))
        raise ValueError(f"scheme {scheme!r} takes {SCHEME_PARAMS[scheme]}; got wrong keys: {keys}")
    if not 1 <= num_clients <= len(labels):
        raise ValueError(f"num_clients={num_clients} must be in 1..{len(labels)} (train set size)")

    perm = np.random.default_rng(seed).permutation(len(labels))
    if scheme == "iid":
        return _iid(perm, num_clients)
    if scheme == "natural":
        from sim.partition.natural import natural_partition

        return natural_partition(ids, perm, num_clients, str(params["by"]))  # the CSR path: sim.partition.natural

    settings = ", ".join(
        [f"num_clients={num_clients}"] + [f"partition.{k}={v}" for k, v in params.items()]
    )
    from datasets import Dataset

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if scheme == "inner_dirichlet" and params["sizes"] is None:  # null: equal shares
                params = {**params, "sizes": equal_sizes(len(labels), num_clients)}
            partitioner = _make_partitioner(scheme, num_clients, seed, params)
            partitioner.dataset = Dataset.from_dict({"label": labels[perm], "idx": perm})
            _ = partitioner.num_partitions  # computes the whole partition_id -> indices map
    except (ValueError, TypeError) as err:
        reason = " ".join(str(err).split())
        if scheme == "dirichlet" and DIRICHLET_GAVE_UP in reason:
            raise _dirichlet_gave_up(num_clients, len(labels), params) from None
        raise PartitionError(f"flwr-datasets cannot partition with {settings}: {reason}") from None
    for warning in caught:  # flwr-datasets' own advice at WARNING, library chatter at DEBUG
        level = logging.WARNING if "flwr_datasets" in warning.filename else logging.DEBUG
        log.log(level, "%s (%s): %s", scheme, settings, " ".join(str(warning.message).split()))

    # Positions refer to partitioner.dataset (sorted by label for shards): map them back.
    column = partitioner.dataset.with_format("numpy")[:]["idx"]
    position_to_index = np.asarray(column, dtype=np.int64)
    mapping = partitioner_index_map(partitioner, num_clients)
    if mapping is None:  # other flwr-datasets versions: the public API, one client at a time
        loaded = (partitioner.load_partition(c)["idx"] for c in range(num_clients))
        return [np.asarray(idx, dtype=np.int64) for idx in loaded]
    return [position_to_index[np.asarray(mapping[c], dtype=np.int64)] for c in range(num_clients)]


def _dirichlet_gave_up(num_clients: int, num_examples: int, params: dict[str, Any]) -> PartitionError:
    """The one-line error for a Dirichlet split whose every draw left a client too small."""
    minimum, alpha = params["min_partition_size"], params["alpha"]
    return PartitionError(
        f"partition.min_partition_size={minimum} cannot be met: flwr-datasets' DirichletPartitioner drew "
        f"Dirichlet(partition.alpha={alpha}) class shares for num_clients={num_clients} "
        f"({num_examples // num_clients} examples each on average) 10 times and each draw left a client "
        f"with fewer than {minimum} examples: lower partition.min_partition_size (0 accepts any draw), "
        f"raise partition.alpha, or lower num_clients"
    )


def equal_sizes(n: int, num_clients: int) -> list[int]:
    """`num_clients` sizes summing to `n`, the first `n % num_clients` one larger (as `_iid`)."""
    div, mod = divmod(n, num_clients)
    return [div + 1] * mod + [div] * (num_clients - mod)


def split_validation(
    parts: list[np.ndarray], val_fraction: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hold out `floor(len * val_fraction)` random examples of every client for validation.

    One `np.random.default_rng(seed)` shuffles the clients' arrays in client order; of
    each shuffle `val = shuffled[:k]` and `train = shuffled[k:]` with
    `k = floor(len * val_fraction)` (a 1e-9 tolerance makes `100 * 0.29` give 29), so a
    1-example client keeps its example for training. Returns `(train, val)` lists.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for part in parts:
        shuffled = np.asarray(part, dtype=np.int64)[rng.permutation(len(part))]
        num_val = math.floor(len(part) * val_fraction + 1e-9)
        val.append(shuffled[:num_val])
        train.append(shuffled[num_val:])
    return train, val
