"""Natural partitions: one client per distinct id (writer, user, speaker), as FEMNIST is used.

`natural_csr(ids, perm, num_clients, by)` gives exactly what flwr-datasets'
`NaturalIdPartitioner(partition_by=by)` gives on the column shuffled by `perm` (as
`FederatedDataset(shuffle=True)` does): client `c` holds the examples of the `c`-th
smallest id, in shuffled order. It is vectorised (one stable sort) rather than the
partitioner's per-row Python loop, and it stays in CSR layout (`indices`, `offsets`) with
`split_validation_csr`, so 1,000,000 single-example clients split in about a second
(`python -m sim.bench --workloads natural-1m`); a test checks it against
`NaturalIdPartitioner` itself. `ids` are int64 codes of the sorted distinct values
(`sim.data.hf` stores id columns so), which keeps the order the partitioner uses.
"""

from __future__ import annotations

import numpy as np


def natural_csr(ids: np.ndarray | None, perm: np.ndarray, num_clients: int, by: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices, offsets): client `c` holds `indices[offsets[c]:offsets[c + 1]]` (see module doc)."""
    if ids is None:
        raise ValueError(f"partition.by={by}: the data set has no such column")
    ids = np.asarray(ids)
    if ids.shape != perm.shape:
        raise ValueError(f"partition.by={by} has {ids.size} values for {perm.size} examples")
    values, codes = np.unique(ids[perm], return_inverse=True)
    if len(values) != num_clients:
        raise ValueError(
            f"partition=natural partition.by={by} gives {len(values)} clients (one per distinct {by}) "
            f"but num_clients={num_clients}; set num_clients={len(values)}"
        )
    codes = codes.reshape(-1)
    order = np.argsort(codes, kind="stable")  # positions grouped by id, shuffled order kept
    offsets = np.zeros(num_clients + 1, dtype=np.int64)
    np.cumsum(np.bincount(codes, minlength=num_clients), out=offsets[1:])
    return perm.astype(np.int64)[order], offsets


def natural_partition(ids: np.ndarray | None, perm: np.ndarray, num_clients: int, by: str) -> list[np.ndarray]:
    """`natural_csr` as one index array per client (the `sim.partition.schemes.partition_labels` form)."""
    indices, offsets = natural_csr(ids, perm, num_clients, by)
    return np.split(indices, offsets[1:-1])


def split_validation_csr(
    indices: np.ndarray, offsets: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out `floor(len * val_fraction)` random examples of every client, vectorised.

    The same rule as `sim.partition.schemes.split_validation` (a 1-example client keeps its example
    for training), drawn differently: one `rng.random` key per example and a sort within
    each client, instead of a permutation per client. Returns CSR
    `(train_indices, train_offsets, val_indices, val_offsets)`.
    """
    sizes = np.diff(offsets)
    client_of = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    keys = np.random.default_rng(seed).random(len(indices))
    shuffled = indices[np.lexsort((keys, client_of))]
    num_val = np.floor(sizes * val_fraction + 1e-9).astype(np.int64)
    is_val = np.arange(len(indices)) - offsets[:-1][client_of] < num_val[client_of]
    train_offsets = np.zeros_like(offsets)
    val_offsets = np.zeros_like(offsets)
    np.cumsum(sizes - num_val, out=train_offsets[1:])
    np.cumsum(num_val, out=val_offsets[1:])
    return shuffled[~is_val], train_offsets, shuffled[is_val], val_offsets
