"""How client tasks reach the data: one copy per node, never one per worker.

The driver puts the uint8 train images, labels and the partition's index arrays into
Ray's object store once. Client tasks receive only a small `DataHandle`; the first task
in a worker process fetches the arrays, which Ray maps read-only from the node's shared
memory (zero-copy), and later tasks in that process reuse them. On a multi-node cluster
the object store carries the arrays to each node: no shared filesystem is needed.
Tests and the reference loop use the same handle with in-process arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class ClientData:
    """Train images and labels plus every client's train and validation indices (CSR)."""

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    train_indices: np.ndarray  # int64, all clients' train indices concatenated
    train_offsets: np.ndarray  # int64 (num_clients + 1,)
    val_indices: np.ndarray
    val_offsets: np.ndarray

    def train_ids(self, cid: int) -> np.ndarray:
        """Indices of client `cid`'s training examples."""
        return self.train_indices[self.train_offsets[cid] : self.train_offsets[cid + 1]]

    def val_ids(self, cid: int) -> np.ndarray:
        """Indices of client `cid`'s local validation examples."""
        return self.val_indices[self.val_offsets[cid] : self.val_offsets[cid + 1]]

    @classmethod
    def from_parts(cls, images: np.ndarray, labels: np.ndarray, partition) -> "ClientData":
        """Combine train arrays with a `sim.partition.manifest.Partition`."""
        return cls(
            images=images,
            labels=labels,
            train_indices=partition.train_indices,
            train_offsets=partition.train_offsets,
            val_indices=partition.val_indices,
            val_offsets=partition.val_offsets,
        )


_FETCHED: dict[str, ClientData] = {}  # per worker process: object id -> arrays


class DataHandle:
    """A picklable reference to `ClientData`: a Ray object ref, or the arrays themselves."""

    def __init__(self, data: ClientData | None = None, ref=None):
        self._data = data
        self._ref = ref

    @classmethod
    def share(cls, data: ClientData) -> "DataHandle":
        """Put `data` into Ray's object store (Ray must be initialised) and return a handle."""
        import ray

        # Plain C-contiguous ndarrays travel as out-of-band buffers that workers map
        # read-only from shared memory; an np.memmap would be pickled into every worker.
        arrays = {f.name: np.ascontiguousarray(np.asarray(getattr(data, f.name))) for f in fields(ClientData)}
        return cls(ref=ray.put(arrays))

    def get(self) -> ClientData:
        """The arrays; fetched from the object store once per process."""
        if self._data is not None:
            return self._data
        key = self._ref.hex()
        if key not in _FETCHED:
            import ray

            _FETCHED.clear()  # a new run's data replaces the last one's
            _FETCHED[key] = ClientData(**ray.get(self._ref))
        return _FETCHED[key]
