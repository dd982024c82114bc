"""Bring your own model and data: the model zoo, any nn.Module, image folders that infer
their shape and statistics, Hugging Face data sets, natural and size partitions (in-process,
no Ray; the end-to-end runs are in tests/e2e/test_byo_e2e.py).
"""

from __future__ import annotations

import time
import zipfile

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord

from helpers.own_data import POOLNET, PoolNet, gray_folder, hf_copy, png
from helpers import compose_config
from sim.data import DataError, load_dataset
from sim.data.spec import with_data
from sim.federation.client_app import train_pack
from sim.federation.client_settings import ClientSettings
from sim.federation.client_data import ClientData
from sim.federation.training import Normalizer, TrainSettings, train_local
from sim.models import build_model, model_spec
from sim.partition.schemes import partition_labels, split_validation
from sim.run.recipe import initial_model


# ----------------------------------------------------------------------------------- item 1: models


def test_any_module_is_built_from_the_resolved_config_in_driver_and_client(tmp_path):
    cfg = compose_config(["dataset=synthetic", "dataset.num_train=64", "dataset.num_test=16", *POOLNET])
    cfg.dataset.data_dir = str(tmp_path)
    data = load_dataset(cfg.dataset, 0)
    cfg = with_data(cfg, data)
    assert model_spec(cfg) == {"_target_": "helpers.own_data.PoolNet", "colours": 3, "n_out": 10, "hidden": 8}
    parts = split_validation(partition_labels(data.train_labels, "iid", 2, seed=0), 0.25, seed=0)
    offsets = lambda p: np.concatenate([[0], np.cumsum([len(x) for x in p])]).astype(np.int64)  # noqa: E731
    client = ClientData(data.train_images, data.train_labels, np.concatenate(parts[0]), offsets(parts[0]),
                        np.concatenate(parts[1]), offsets(parts[1]))
    start = initial_model(cfg)
    assert isinstance(start, PoolNet)
    settings = ClientSettings.from_config(cfg)
    assert settings.model == model_spec(cfg)
    config = ConfigRecord({"cids": [0, 1], "server-round": 1})
    state, metrics = train_pack(client, ArrayRecord(start.state_dict()), config, settings)
    assert set(state) == set(start.state_dict()) and metrics["num-examples"] == len(client.train_indices)
    assert not torch.equal(state["body.4.weight"], start.state_dict()["body.4.weight"])


def test_resnet18_groupnorm_one_training_step(tmp_path):
    cfg = compose_config(["dataset=synthetic", "dataset.num_train=16", "dataset.num_test=8", "model=resnet18"])
    cfg.dataset.data_dir = str(tmp_path)
    data = load_dataset(cfg.dataset, 0)
    model = build_model(model_spec(with_data(cfg, data)))
    kinds = {type(m).__name__ for m in model.modules()}
    assert "GroupNorm" in kinds and not any("BatchNorm" in k for k in kinds)
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)  # the CIFAR stem
    assert 11_000_000 < sum(p.numel() for p in model.parameters()) < 11_300_000
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.from_numpy(np.array(data.train_images[:8])), torch.from_numpy(np.array(data.train_labels[:8]))
    normalize = Normalizer(data.mean, data.std, torch.device("cpu"))
    loss = train_local(model, x, y, TrainSettings(epochs=1, batch_size=8, lr=0.05), normalize, seed=0)
    assert np.isfinite(loss) and loss > 0
    assert model(normalize(x)).shape == (8, 10)
    assert not torch.equal(before["fc.weight"], model.state_dict()["fc.weight"])


# ---------------------------------------------------------------------- item 2: image folders


def test_folder_infers_shape_classes_and_statistics(tmp_path):
    path, ds = gray_folder(tmp_path, num_train=40, num_test=12)
    cfg = compose_config(["dataset=folder", f"dataset.path={path}", "model=cnn28"])
    cfg.dataset.data_dir = str(tmp_path / "data")
    data = load_dataset(cfg.dataset, 0)
    assert data.name == "digits" and data.classes == ("c0", "c1", "c2", "c3")
    assert data.train_images.shape == (40, 28, 28, 1) and data.test_images.shape == (12, 28, 28, 1)
    pixels = np.array(data.train_images, dtype=np.float64) / 255
    np.testing.assert_allclose(data.mean, [pixels.mean()], atol=1e-4)
    np.testing.assert_allclose(data.std, [pixels.std()], atol=1e-4)
    again = load_dataset(cfg.dataset, 0)  # from the cache: stats stored with the arrays
    assert isinstance(again.train_images, np.memmap) and again.mean == data.mean and again.std == data.std
    derived = with_data(cfg, data)
    assert cfg.dataset.num_classes is None and cfg.dataset.mean is None  # cfg itself untouched
    assert (derived.dataset.channels, derived.dataset.image_size, derived.dataset.num_classes) == (1, 28, 4)
    assert list(derived.dataset.mean) == list(data.mean) and derived.dataset.name == "digits"
    assert model_spec(derived) == {"_target_": "sim.models.cnn28.CNN28", "in_channels": 1, "image_size": 28,
                                   "num_classes": 4, "hidden": 512}
    with pytest.raises(DataError, match=r"^digits has 4 classes but dataset\.num_classes=10; set dataset\.num_classes=4"):
        cfg.dataset.num_classes = 10
        load_dataset(cfg.dataset, 0)
    cfg.dataset.num_classes = None
    cfg.dataset.image_size = 16  # a resize
    resized = load_dataset(cfg.dataset, 0)
    assert resized.train_images.shape == (40, 16, 16, 1)
    cfg.dataset.image_size, cfg.dataset.channels = None, 3  # an explicit conversion
    assert load_dataset(cfg.dataset, 0).train_images.shape == (40, 28, 28, 3)


def test_folder_of_mixed_sizes_asks_for_a_size(tmp_path):
    files = {f"{s}/a/{i}.png": png(np.zeros((28 + i, 28 + i, 3), np.uint8)) for s in ("train", "test") for i in (0, 1)}
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    cfg = compose_config(["dataset=folder", f"dataset.path={path}"])
    cfg.dataset.data_dir = str(tmp_path / "data")
    with pytest.raises(DataError, match=r"not all of one square size: .* set dataset\.image_size=N"):
        load_dataset(cfg.dataset, 0)
    cfg.dataset.image_size = 28
    data = load_dataset(cfg.dataset, 0)
    assert data.train_images.shape == (2, 28, 28, 3) and data.name == "mixed"


# ------------------------------------------------------------------------ item 3: Hugging Face


def test_hf_save_to_disk_and_parquet_copies(tmp_path):
    path, (ds, writer) = hf_copy(tmp_path, writers=3, per_writer=10)
    cfg = compose_config(["dataset=hf", f"dataset.path={path}", "dataset.image_column=img", "dataset.label_column=fine"])
    cfg.dataset.data_dir = str(tmp_path / "data")
    data = load_dataset(cfg.dataset, 0)
    assert data.name == "tiny_hf" and data.classes == ("ant", "bee", "cat")
    np.testing.assert_array_equal(data.train_images, ds.train_images)
    np.testing.assert_array_equal(data.test_labels, ds.test_labels)
    np.testing.assert_array_equal(data.columns["writer_id"], np.unique(writer, return_inverse=True)[1])
    assert len(data.mean) == 3 and with_data(cfg, data).dataset.num_classes == 3
    import datasets

    parquet = tmp_path / "pq"
    parquet.mkdir()
    for split, table in datasets.load_from_disk(str(path)).items():
        table.to_parquet(str(parquet / f"{split}-00000.parquet"))
    cfg.dataset.path, cfg.dataset.test_split = str(parquet), None  # and hold out a test share
    held = load_dataset(cfg.dataset, 0)
    assert len(held.train_labels) + len(held.test_labels) == 30 and len(held.test_labels) == 3
    assert held.name == "pq" and len(held.columns["writer_id"]) == 27


def test_hf_offline_without_a_copy_fails_at_once_with_one_line(tmp_path):
    cfg = compose_config(["dataset=cifar100"])
    cfg.dataset.data_dir = str(tmp_path)
    started = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_dataset(cfg.dataset, 0)
    message = str(info.value)
    assert "dataset.repo=uoft-cs/cifar100" in message and "dataset.path=DIR" in message and "\n" not in message
    assert time.perf_counter() - started < 10


# ------------------------------------------------------------------------ item 4: partitions


def test_natural_partition_equals_flwr_datasets_natural_id_partitioner():
    from datasets import Dataset
    from flwr_datasets.partitioner import NaturalIdPartitioner

    rng = np.random.default_rng(3)
    raw = rng.choice(np.array(["bob", "al", "zed", "kim", "eve"]), size=200)
    codes = np.unique(raw, return_inverse=True)[1]
    ours = partition_labels(np.zeros(200, np.int64), "natural", 5, seed=7, ids=codes, by="writer")
    perm = np.random.default_rng(7).permutation(200)
    oracle = NaturalIdPartitioner(partition_by="writer")
    oracle.dataset = Dataset.from_dict({"writer": raw[perm].tolist(), "idx": perm})
    for c in range(oracle.num_partitions):
        np.testing.assert_array_equal(ours[c], oracle.load_partition(c)["idx"])
    with pytest.raises(ValueError, match=r"gives 5 clients .* set num_clients=5"):
        partition_labels(np.zeros(200, np.int64), "natural", 4, seed=7, ids=codes, by="writer")


@pytest.mark.parametrize("scheme", ["linear", "square", "exponential", "inner_dirichlet"])
def test_size_and_inner_dirichlet_partitions_equal_flwr_datasets(scheme):
    from datasets import Dataset
    from flwr_datasets import partitioner as fp

    labels = np.random.default_rng(1).integers(0, 4, 300)
    params = {"alpha": 0.5, "sizes": None} if scheme == "inner_dirichlet" else {}
    ours = partition_labels(labels, scheme, 6, seed=2, **params)
    perm = np.random.default_rng(2).permutation(300)
    if scheme == "inner_dirichlet":
        oracle = fp.InnerDirichletPartitioner([50] * 6, partition_by="label", alpha=0.5, seed=2)
    else:
        oracle = {"linear": fp.LinearPartitioner, "square": fp.SquarePartitioner,
                  "exponential": fp.ExponentialPartitioner}[scheme](num_partitions=6)
    oracle.dataset = Dataset.from_dict({"label": labels[perm], "idx": perm})
    sizes = [len(p) for p in ours]
    for c in range(6):
        np.testing.assert_array_equal(ours[c], oracle.load_partition(c)["idx"])
    assert sum(sizes) == 300 and (scheme == "inner_dirichlet" or sizes == sorted(sizes))


def test_natural_manifest_is_csr_with_a_floor_validation_split(tmp_path):
    from omegaconf import OmegaConf

    from sim.partition.manifest import load_or_create_partition
    from sim.partition.natural import natural_partition

    ids = np.random.default_rng(4).integers(0, 30, 500)
    labels = np.random.default_rng(5).integers(0, 3, 500)
    cfg = OmegaConf.create({"scheme": "natural", "by": "writer", "val_fraction": 0.25, "dir": str(tmp_path)})
    part = load_or_create_partition(labels, cfg, "gen", 3, 30, 1, ids=ids)
    expected = natural_partition(ids, np.random.default_rng(1).permutation(500), 30, "writer")
    for c in range(30):
        train, val = part.train(c), part.val(c)
        assert len(val) == int(len(expected[c]) * 0.25 + 1e-9) and not set(train) & set(val)
        assert sorted([*train, *val]) == sorted(expected[c])
        assert np.all(ids[train] == ids[expected[c][0]])
    assert part.path.name == "gen_natural_bywriter_n30_val0.25_seed1.npz"
    again = load_or_create_partition(labels, cfg, "gen", 3, 30, 1, ids=ids)
    np.testing.assert_array_equal(again.val_indices, part.val_indices)
    other = load_or_create_partition(labels, cfg, "gen", 3, 30, 1, ids=np.roll(ids, 1))  # other ids: rebuilt
    assert not np.array_equal(other.train_indices, part.train_indices)


@pytest.mark.parametrize("overrides,key", [
    (["dataset=folder"], "dataset.path"),
    (["dataset=hf"], "dataset.repo"),
    (["dataset=hf", "dataset.path=/no/such/copy"], "dataset.path"),
    (["partition=natural"], "partition.by"),
    (["dataset=folder", "dataset.path=.", "dataset.channels=2"], "dataset.channels"),
    (["dataset=folder", "dataset.path=.", "dataset.mean=[0.5,0.5]", "dataset.channels=1"], "dataset.mean"),
    (["partition=size", "partition.scheme=cubic"], "partition.scheme"),
    (["model=custom"], "model._target_"),
])
def test_bad_byo_settings_are_one_line_before_any_work(overrides, key):
    from sim.errors import ConfigError
    from sim.config.validate import validate

    with pytest.raises(ConfigError) as info:
        validate(compose_config(overrides))
    assert str(info.value).startswith(key) and "\n" not in str(info.value)
