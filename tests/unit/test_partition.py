"""Tests of `sim.partition.schemes`, `sim.partition.manifest` and `sim.partition.report`: exact indices, determinism, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    PathologicalPartitioner,
    ShardPartitioner,
)
from omegaconf import OmegaConf

from sim.partition.schemes import partition_labels, split_validation
from sim.partition.manifest import Partition, load_or_create_partition, manifest_stem
from sim.partition.report import report_paths

PARAMS = {
    "iid": {},
    "dirichlet": {"alpha": 0.5, "min_partition_size": 10, "self_balancing": False},
    "shard": {"shards_per_client": 2, "shard_size": None},
    "pathological": {"classes_per_client": 2, "class_assignment_mode": "first-deterministic"},
}


def cfg_for(scheme: str, tmp_path: Path, val_fraction: float = 0.1, **overrides):
    """A `partition` node with the keys of conf/partition/<scheme>.yaml."""
    node = {"scheme": scheme, **PARAMS[scheme], "val_fraction": val_fraction, "dir": str(tmp_path)}
    return OmegaConf.create({**node, **overrides})


@pytest.fixture
def labels() -> np.ndarray:
    """1,000 labels of 10 classes in random order."""
    return np.random.default_rng(123).integers(0, 10, size=1000)


def test_iid_equals_flwr_iid_partitioner_on_shuffled_column():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    parts = partition_labels(labels, "iid", 3, seed=0)
    shuffled = Dataset.from_dict({"label": labels, "idx": np.arange(10)}).shuffle(seed=0)
    reference = IidPartitioner(num_partitions=3)
    reference.dataset = shuffled
    expected = [np.asarray(reference.load_partition(c)["idx"]) for c in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    for got, want in zip(parts, expected):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    perm = np.random.default_rng(0).permutation(10)
    np.testing.assert_array_equal(np.concatenate(parts), perm)


REFERENCE = {
    "dirichlet": lambda: DirichletPartitioner(4, "label", alpha=0.5, min_partition_size=2, seed=3),
    "shard": lambda: ShardPartitioner(4, "label", num_shards_per_partition=2, shard_size=3, seed=3),
    "pathological": lambda: PathologicalPartitioner(4, "label", 2, "first-deterministic", seed=3),
}
SMALL = {
    "dirichlet": {"alpha": 0.5, "min_partition_size": 2, "self_balancing": False},
    "shard": {"shards_per_client": 2, "shard_size": 3},
    "pathological": {"classes_per_client": 2, "class_assignment_mode": "first-deterministic"},
}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # pyarrow's sort options, via datasets
@pytest.mark.parametrize("scheme", list(REFERENCE))
def test_non_iid_equals_flwr_partitioner_on_shuffled_column(scheme):
    labels = np.repeat(np.arange(4), 6)[::-1].copy()  # sorted descending: shard sorting must matter
    parts = partition_labels(labels, scheme, 4, seed=3, **SMALL[scheme])
    reference = REFERENCE[scheme]()
    reference.dataset = Dataset.from_dict({"label": labels, "idx": np.arange(24)}).shuffle(seed=3)
    for c, got in enumerate(parts):
        np.testing.assert_array_equal(got, np.asarray(reference.load_partition(c)["idx"]))
        assert len(set(labels[got])) <= 2 or scheme == "dirichlet"


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shard"])
def test_every_index_exactly_once(scheme, labels):
    parts = partition_labels(labels, scheme, 10, seed=0, **PARAMS[scheme])  # 1000 = 10 * 2 * 50
    assert len(parts) == 10
    assert sum(len(p) for p in parts) == len(labels)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))


def test_shard_clients_get_at_most_shards_per_client_labels():
    labels = np.repeat(np.arange(10), 40)  # every class is exactly two shards of 20
    parts = partition_labels(labels, "shard", 10, seed=1, shards_per_client=2, shard_size=None)
    assert all(len(p) == 40 for p in parts)
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    assert any(len(np.unique(labels[p])) == 2 for p in parts)


@pytest.mark.parametrize("mode", ["first-deterministic", "deterministic", "random"])
def test_pathological_clients_have_at_most_k_classes(mode, labels):
    parts = partition_labels(labels, "pathological", 20, seed=0, classes_per_client=3, class_assignment_mode=mode)
    assert all(1 <= len(np.unique(labels[p])) <= 3 for p in parts)
    everything = np.concatenate(parts)
    assert len(np.unique(everything)) == len(everything)


@pytest.mark.parametrize("scheme", list(PARAMS))
def test_deterministic_in_seed(scheme, labels):
    first = partition_labels(labels, scheme, 10, seed=7, **PARAMS[scheme])
    again = partition_labels(labels, scheme, 10, seed=7, **PARAMS[scheme])
    other = partition_labels(labels, scheme, 10, seed=8, **PARAMS[scheme])
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_split_validation_sizes_and_disjointness():
    parts = [np.arange(0, 10), np.arange(10, 11), np.arange(11, 111), np.arange(111, 140)]
    train, val = split_validation(parts, 0.29, seed=0)
    assert [len(v) for v in val] == [2, 0, 29, 8]  # floor(n * 0.29)
    for part, tr, va in zip(parts, train, val):
        assert len(tr) + len(va) == len(part)
        assert not set(tr) & set(va)
        assert set(tr) | set(va) == set(part)
    assert list(train[1]) == [10]  # a 1-example client keeps it for training
    again_train, _ = split_validation(parts, 0.29, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(train, again_train))


def test_manifest_is_reused_and_views_match(tmp_path, labels):
    cfg = cfg_for("dirichlet", tmp_path)
    first = load_or_create_partition(labels, cfg, "cifar10", 10, 10, seed=0)
    assert first.path == tmp_path / "cifar10_dirichlet_alpha0.5_min10_n10_val0.1_seed0.npz"
    csv_path, png_path = report_paths(first.path)
    assert csv_path.name == "cifar10_dirichlet_alpha0.5_min10_n10_val0.1_seed0_label_counts.csv"
    assert png_path.stat().st_size > 0
    stamps = {p: p.stat().st_mtime_ns for p in (first.path, csv_path, png_path)}
    bytes_before = first.path.read_bytes()

    second = load_or_create_partition(labels, cfg, "cifar10", 10, 10, seed=0)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert first.path.read_bytes() == bytes_before
    for name in ("train_indices", "train_offsets", "val_indices", "val_offsets"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert isinstance(second, Partition) and second.num_clients == 10
    np.testing.assert_array_equal(second.train(3), second.train_indices[second.train_offsets[3]:second.train_offsets[4]])
    assert second.train_sizes().sum() + second.val_sizes().sum() == len(labels)
    assert all(len(second.val(c)) == int(np.floor((len(second.val(c)) + len(second.train(c))) * 0.1)) for c in range(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in stamps)  # no temp files left


def test_other_params_or_labels_give_other_manifest(tmp_path, labels):
    base = load_or_create_partition(labels, cfg_for("dirichlet", tmp_path), "cifar10", 10, 10, seed=0)
    alpha = load_or_create_partition(labels, cfg_for("dirichlet", tmp_path, alpha=0.1), "cifar10", 10, 10, seed=0)
    seed = load_or_create_partition(labels, cfg_for("dirichlet", tmp_path), "cifar10", 10, 10, seed=1)
    assert len({base.path, alpha.path, seed.path}) == 3
    assert "alpha0.1" in alpha.path.name and seed.path.name.endswith("_seed1.npz")
    # Same file name, different labels: the hash in the metadata forces a rebuild.
    mtime = base.path.stat().st_mtime_ns
    rebuilt = load_or_create_partition(labels[::-1].copy(), cfg_for("dirichlet", tmp_path), "cifar10", 10, 10, seed=0)
    assert rebuilt.path == base.path and base.path.stat().st_mtime_ns != mtime
    assert not np.array_equal(rebuilt.train_indices, base.train_indices)


def test_manifest_stem_formatting():
    assert manifest_stem("synthetic", "shard", PARAMS["shard"], 100, 0.1, 0) == "synthetic_shard_spc2_sizeauto_n100_val0.1_seed0"
    stem = manifest_stem("cifar10", "dirichlet", {"alpha": 1e-5, "min_partition_size": 0, "self_balancing": True}, 5, 0, 2)
    assert stem == "cifar10_dirichlet_alpha0.00001_min0_selfbal_n5_val0_seed2"
    assert manifest_stem("cifar10", "pathological", PARAMS["pathological"], 50, 0.25, 1) == (
        "cifar10_pathological_k2_first-deterministic_n50_val0.25_seed1"
    )


def _mean_label_entropy(csv_path: Path) -> float:
    table = np.loadtxt(csv_path, delimiter=",", skiprows=1, dtype=np.int64)
    counts = table[:, 3:]
    assert (counts.sum(axis=1) == table[:, 1] + table[:, 2]).all()
    p = counts / counts.sum(axis=1, keepdims=True)
    return float(-(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1).mean())


def test_small_alpha_is_more_skewed_than_large_alpha(tmp_path):
    labels = np.random.default_rng(0).integers(0, 10, size=4000)
    skewed = load_or_create_partition(labels, cfg_for("dirichlet", tmp_path, alpha=0.1), "synthetic", 10, 20, seed=0)
    flat = load_or_create_partition(labels, cfg_for("dirichlet", tmp_path, alpha=100), "synthetic", 10, 20, seed=0)
    low, high = (_mean_label_entropy(report_paths(p.path)[0]) for p in (skewed, flat))
    assert low < 1.5 < 2.2 < high <= np.log(10)


def test_rejected_parameters_raise_one_line_value_error(labels, tmp_path):
    with pytest.raises(ValueError, match=r"partition.shard_size=100") as err:
        partition_labels(labels, "shard", 10, seed=0, shards_per_client=2, shard_size=100)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"partition.alpha=0.01"):
        partition_labels(labels, "dirichlet", 100, seed=0, alpha=0.01, min_partition_size=10, self_balancing=False)
    with pytest.raises(ValueError, match=r"partition.classes_per_client=11"):
        partition_labels(labels, "pathological", 5, seed=0, classes_per_client=11, class_assignment_mode="random")
    with pytest.raises(ValueError, match=r"num_clients=1001"):
        partition_labels(labels, "iid", 1001, seed=0)
    with pytest.raises(ValueError, match=r"partition.scheme"):
        load_or_create_partition(labels, OmegaConf.create({"scheme": "zipf", "val_fraction": 0.1, "dir": str(tmp_path)}), "x", 10, 5, 0)


def test_50k_iid_clients_hold_one_sample_each(tmp_path):
    labels = np.random.default_rng(0).integers(0, 10, size=50_000)
    partition = load_or_create_partition(labels, cfg_for("iid", tmp_path), "cifar10", 10, 50_000, seed=0)
    assert partition.num_clients == 50_000
    assert (partition.train_sizes() == 1).all() and (partition.val_sizes() == 0).all()
    csv_path, png_path = report_paths(partition.path)
    assert sum(1 for _ in csv_path.open()) == 50_001 and png_path.stat().st_size > 0
