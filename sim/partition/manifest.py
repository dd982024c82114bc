"""Partition manifests: a client partition stored once, reused by every later run.

`load_or_create_partition` caches the result of `sim.partition.schemes` under `partition.dir` as
a manifest `<dataset>_<scheme>_<params>_n<N>_val<f>_seed<s>.npz` holding the CSR arrays
of `Partition` plus JSON metadata (including a hash of the labels), and writes the
label-count CSV and plot of `sim.partition.report` beside it. A later call with the same
parameters and labels loads the manifest instead of partitioning again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig

from sim.partition.schemes import SCHEME_PARAMS, partition_labels, split_validation
from sim.partition.report import atomic_write, report_paths, write_report

log = logging.getLogger(__name__)

ARRAYS = ("train_indices", "train_offsets", "val_indices", "val_offsets")  # manifest arrays
MANIFEST_FORMAT = 1  # bump when the manifest layout or the partition recipe changes


@dataclass(frozen=True)
class Partition:
    """Train/validation indices of every client in CSR layout (cheap for 50,000 clients).

    Client `c` trains on `train_indices[train_offsets[c]:train_offsets[c + 1]]` and
    validates on the same slice of `val_indices`; indices refer to the label array.
    """

    train_indices: np.ndarray
    train_offsets: np.ndarray
    val_indices: np.ndarray
    val_offsets: np.ndarray
    path: Path | None = None

    def __post_init__(self) -> None:
        for name in ARRAYS:  # shared views must not be edited by a client
            getattr(self, name).flags.writeable = False

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.train_offsets) - 1

    def train(self, cid: int) -> np.ndarray:
        """Train indices of client `cid` (a view, do not modify)."""
        return self.train_indices[self.train_offsets[cid] : self.train_offsets[cid + 1]]

    def val(self, cid: int) -> np.ndarray:
        """Validation indices of client `cid` (a view, do not modify)."""
        return self.val_indices[self.val_offsets[cid] : self.val_offsets[cid + 1]]

    def train_sizes(self) -> np.ndarray:
        """Number of train examples of every client."""
        return np.diff(self.train_offsets)

    def val_sizes(self) -> np.ndarray:
        """Number of validation examples of every client."""
        return np.diff(self.val_offsets)


def _to_csr(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-client arrays into `(indices, offsets)`."""
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    indices = np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)
    return indices, offsets


def _fmt(value: float) -> str:
    """Stable, exponent-free float formatting for file names: 0.5, 100, 0.00001."""
    return np.format_float_positional(float(value), trim="-")


def manifest_stem(dataset: str, scheme: str, params: dict[str, Any], num_clients: int,
                  val_fraction: float, seed: int) -> str:
    """File stem of a manifest, e.g. `cifar10_dirichlet_alpha0.5_min10_n100_val0.1_seed0`."""
    fields = [dataset, scheme]
    if scheme == "dirichlet":
        fields += [f"alpha{_fmt(params['alpha'])}", f"min{params['min_partition_size']}"]
        fields += ["selfbal"] if params["self_balancing"] else []
    elif scheme == "shard":
        size = params["shard_size"]
        fields += [f"spc{params['shards_per_client']}", f"size{'auto' if size is None else size}"]
    elif scheme == "pathological":
        fields += [f"k{params['classes_per_client']}", str(params["class_assignment_mode"])]
    elif scheme == "natural":
        fields += [f"by{params['by']}"]
    elif scheme == "inner_dirichlet":
        sizes = params["sizes"]
        shown = "equal" if sizes is None else hashlib.sha256(json.dumps(sizes).encode()).hexdigest()[:8]
        fields += [f"alpha{_fmt(params['alpha'])}", f"sizes{shown}"]
    fields += [f"n{num_clients}", f"val{_fmt(val_fraction)}", f"seed{seed}"]
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in "_".join(fields))


def _scheme_params(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """Read the scheme and its parameters from the `partition` node (validated: sim.config.validate)."""
    scheme = str(cfg.get("scheme"))
    params = {k: cfg[k] for k in SCHEME_PARAMS.get(scheme, ())}  # an unknown scheme: partition() names it
    if isinstance(params.get("sizes"), ListConfig):  # inner_dirichlet: a list of client sizes
        params["sizes"] = [int(v) for v in params["sizes"]]
    return scheme, params


def _load_manifest(path: Path, meta: dict[str, Any]) -> Partition | None:
    """Load `path` if it exists, is readable and was built from exactly `meta`."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = json.loads(str(npz["meta"]))
            if stored != meta:
                log.info("Manifest %s was built with other settings or labels; rebuilding", path)
                return None
            arrays = [npz[k] for k in ARRAYS]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        log.warning("Cannot read manifest %s (%s); rebuilding", path, err)
        return None
    return Partition(*arrays, path=path)


def _save_manifest(partition: Partition, path: Path, meta: dict[str, Any]) -> None:
    """Write the CSR arrays and the JSON metadata to `path` atomically."""
    arrays = {k: getattr(partition, k) for k in ARRAYS}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, meta=np.array(json.dumps(meta)))
    atomic_write(path, buffer.getvalue())


def load_or_create_partition(
    labels: np.ndarray, cfg: DictConfig, dataset_name: str, num_classes: int,
    num_clients: int, seed: int, ids: np.ndarray | None = None,
) -> Partition:
    """Return the partition of `labels` described by the `partition` config node `cfg`.

    Reuses `<cfg.dir>/<manifest_stem>.npz` when its metadata matches (same dataset,
    scheme, parameters, N, seed, val_fraction, labels hash, format and flwr-datasets
    version, and the id column's hash for `natural`, whose `ids` are the column
    `partition.by` names); otherwise partitions, splits validation and writes the manifest, the
    label-count CSV and the plot, each atomically.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (dataset.num_classes)")
    scheme, params = _scheme_params(cfg)
    val_fraction = float(cfg.val_fraction)
    ids = None if ids is None or scheme != "natural" else np.asarray(ids, dtype=np.int64)
    meta = json.loads(json.dumps({
        "format": MANIFEST_FORMAT, "flwr_datasets": version("flwr-datasets"),
        "dataset": dataset_name, "scheme": scheme, "params": params,
        "num_clients": num_clients, "seed": seed, "val_fraction": val_fraction,
        "num_labels": int(labels.size), "num_classes": num_classes,
        "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
        **({} if ids is None else {"ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest()}),
    }))
    out_dir = Path(cfg.get("dir") or "partitions")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = manifest_stem(dataset_name, scheme, params, num_clients, val_fraction, seed)
    path = out_dir / f"{stem}.npz"

    partition = _load_manifest(path, meta)
    if partition is not None:
        log.info("Reusing partition manifest %s", path)
        if not all(p.exists() for p in report_paths(path)):
            write_report(partition, labels, num_classes, path)
        return partition

    if scheme == "natural":  # a million one-example clients: stay in CSR layout throughout
        from sim.partition.natural import natural_csr, split_validation_csr

        perm = np.random.default_rng(seed).permutation(len(labels))  # as sim.partition.schemes does
        csr = natural_csr(ids, perm, num_clients, str(params["by"]))
        partition = Partition(*split_validation_csr(*csr, val_fraction, seed), path=path)
    else:
        parts = partition_labels(labels, scheme, num_clients, seed, ids=ids, **params)
        train, val = split_validation(parts, val_fraction, seed)
        partition = Partition(*_to_csr(train), *_to_csr(val), path=path)
    _save_manifest(partition, path, meta)
    write_report(partition, labels, num_classes, path)
    log.info("Wrote partition manifest %s (%d clients) with its CSV and plot", path, num_clients)
    return partition
