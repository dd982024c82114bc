"""Tests for `sim.data`: the CIFAR-10 archive reader, image folders, synthetic data, the cache."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from helpers import CONF_DIR
from sim.data import DataError, Dataset, cache, cifar10, load_dataset, synthetic

CONF = CONF_DIR / "dataset"
CIFAR10_CLASSES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())


def make_cfg(option: str, tmp_path: Path, **overrides: object) -> DictConfig:
    """The real `conf/dataset/<option>.yaml` node with `data_dir` in `tmp_path` plus overrides."""
    base = OmegaConf.load(CONF / f"{option}.yaml")
    return OmegaConf.merge(base, {"data_dir": str(tmp_path / "data"), **overrides})


# ---------------------------------------------------------------- official CIFAR-10 archive


def pixel_rows(n: int, offset: int) -> np.ndarray:
    """`n` CIFAR rows of 3072 bytes (CHW) with distinct, predictable values."""
    return ((np.arange(n * 3072).reshape(n, 3072) + offset) % 251).astype(np.uint8)


def write_fake_cifar(path: Path, per_batch: int = 2, num_test: int = 3) -> dict[str, np.ndarray]:
    """A tiny archive with the real `cifar-10-batches-py` pickle layout; returns its rows/labels."""
    batches = {}
    for i in range(1, 6):
        batches[f"data_batch_{i}"] = pixel_rows(per_batch, offset=i * 7)
    batches["test_batch"] = pixel_rows(num_test, offset=99)
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, obj: object) -> None:
            # Protocol 2 and numpy 1.x module names, as in the real (Python 2 era) archive.
            payload = pickle.dumps(obj, protocol=2)
            payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        add("batches.meta", {b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
        for name, rows in batches.items():
            labels = [(j + len(name)) % 10 for j in range(len(rows))]
            add(name, {b"batch_label": name.encode(), b"data": rows, b"labels": labels})
    return batches


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar10_reader_on_preplaced_fake_archive(tmp_path: Path) -> None:
    archive = tmp_path / "fake.tar.gz"
    batches = write_fake_cifar(archive)
    cfg = make_cfg("cifar10", tmp_path, url="http://127.0.0.1:9/fake.tar.gz", md5=md5_of(archive))
    (tmp_path / "data").mkdir()
    shutil.copy(archive, tmp_path / "data" / "fake.tar.gz")  # already "downloaded": no network
    ds = load_dataset(cfg, seed=0)
    assert ds.name == "cifar10" and ds.classes == CIFAR10_CLASSES
    assert ds.train_images.shape == (10, 32, 32, 3) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (3, 32, 32, 3) and ds.test_labels.dtype == np.int64
    row = batches["data_batch_2"][1]  # train index 3; rows are CHW, images HWC
    for y, x, c in [(0, 0, 0), (5, 17, 1), (31, 31, 2)]:
        assert ds.train_images[3, y, x, c] == row[c * 1024 + y * 32 + x]
    expected = np.concatenate([[(j + 12) % 10 for j in range(2)] for _ in range(5)])
    np.testing.assert_array_equal(ds.train_labels, expected)
    red = batches["test_batch"][2][:1024]
    np.testing.assert_array_equal(ds.test_images[2, :, :, 0].ravel(), red)


def test_cifar10_preplaced_archive_with_wrong_md5(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write_fake_cifar(tmp_path / "data" / "fake.tar.gz")
    cfg = make_cfg("cifar10", tmp_path, url="http://127.0.0.1:9/fake.tar.gz", md5="0" * 32)
    with pytest.raises(DataError, match=r"fake\.tar\.gz has md5 .*dataset\.md5"):
        load_dataset(cfg, seed=0)


def test_cifar10_download_checks_md5(tmp_path: Path) -> None:
    source = tmp_path / "mirror" / "cifar.tar.gz"
    source.parent.mkdir()
    write_fake_cifar(source)
    bad = make_cfg("cifar10", tmp_path, url=source.as_uri(), md5="f" * 32)
    with pytest.raises(DataError, match=r"data/cifar\.tar\.gz has md5"):
        load_dataset(bad, seed=0)
    assert list((tmp_path / "data").iterdir()) == []  # the temp file was deleted
    good = make_cfg("cifar10", tmp_path, url=source.as_uri(), md5=md5_of(source))
    ds = load_dataset(good, seed=0)
    assert (tmp_path / "data" / "cifar.tar.gz").read_bytes() == source.read_bytes()
    assert len(ds.train_labels) == 10 and len(ds.test_labels) == 3


def test_cifar10_offline_error_is_one_clear_message(tmp_path: Path) -> None:
    cfg = make_cfg("cifar10", tmp_path, url="http://127.0.0.1:9/x.tar.gz")
    with pytest.raises(DataError) as info:
        load_dataset(cfg, seed=0)
    message = str(info.value)
    assert "cannot download CIFAR-10 from http://127.0.0.1:9/x.tar.gz" in message
    assert "dataset.path=" in message and "\n" not in message
    assert [p.name for p in (tmp_path / "data").iterdir()] == []


def test_cifar10_reader_refuses_foreign_pickle_globals(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = pickle.dumps({b"data": os.getcwd}, protocol=2)  # names posix.getcwd
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DataError, match=r"cannot unpickle .*data_batch_1 .*is not allowed"):
        cifar10.read_archive(archive)


def test_cifar10_archive_without_batches(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    archive = tmp_path / "data" / "x.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/readme.html")
        tar.addfile(info, io.BytesIO(b""))
    cfg = make_cfg("cifar10", tmp_path, url="http://127.0.0.1:9/x.tar.gz", md5=md5_of(archive))
    with pytest.raises(DataError, match="x.tar.gz is not a CIFAR-10 python archive"):
        load_dataset(cfg, seed=0)


# ---------------------------------------------------------------------------- image folders

CLASSES = ("ant", "bee", "cat")  # folder names; written in an unsorted order below


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def tree_files(size: int = 8) -> dict[str, np.ndarray]:
    """relative path -> RGB pixels of a small train/test image tree (2 per class per split)."""
    files = {}
    for split in ("test", "train"):
        for c, name in reversed(list(enumerate(CLASSES))):
            for j in (1, 0):
                seed = {"train": 0, "test": 1}[split] * 100 + c * 10 + j
                rng = np.random.default_rng(seed)
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                files[f"{split}/{name}/img{j}.png"] = pixels
    return files


def write_tree(files: dict[str, bytes], kind: str, root: Path, wrapper: str = "") -> Path:
    """Write `files` as a directory, .tar, .tar.gz or .zip under `root`; returns its path."""
    prefix = f"{wrapper}/" if wrapper else ""
    if kind == "dir":
        for rel, data in files.items():
            (root / "tree" / prefix / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "tree" / prefix / rel).write_bytes(data)
        return root / "tree"
    if kind == "zip":
        path = root / "tree.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for rel, data in files.items():
                archive.writestr(prefix + rel, data)
        return path
    path = root / {"tar": "tree.tar", "tar.gz": "tree.tar.gz", "tgz": "tree.tgz"}[kind]
    with tarfile.open(path, "w:gz" if kind in ("tar.gz", "tgz") else "w") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(prefix + rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def folder_cfg(path: Path, tmp_path: Path, **overrides: object) -> DictConfig:
    """A `dataset.path` config for the tiny tree: 3 classes of 8x8 images."""
    settings = {"name": "tiny", "path": str(path), "num_classes": 3, "image_size": 8}
    return make_cfg("cifar10", tmp_path, **{**settings, **overrides})


def check_tree(ds: Dataset, pixels: dict[str, np.ndarray]) -> None:
    assert ds.classes == CLASSES and ds.name == "tiny"
    assert ds.train_images.shape == (6, 8, 8, 3) and ds.test_images.shape == (6, 8, 8, 3)
    np.testing.assert_array_equal(ds.train_labels, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.test_labels, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.train_images[2], pixels["train/bee/img0.png"])
    np.testing.assert_array_equal(ds.train_images[5], pixels["train/cat/img1.png"])
    np.testing.assert_array_equal(ds.test_images[0], pixels["test/ant/img0.png"])


@pytest.mark.parametrize("kind", ["dir", "tar", "tar.gz", "tgz", "zip"])
def test_image_folder_layouts(kind: str, tmp_path: Path) -> None:
    pixels = tree_files()
    path = write_tree({rel: png(a) for rel, a in pixels.items()}, kind, tmp_path)
    check_tree(load_dataset(folder_cfg(path, tmp_path), seed=0), pixels)


@pytest.mark.parametrize("kind", ["tar.gz", "zip", "dir"])
def test_image_folder_single_wrapper_folder(kind: str, tmp_path: Path) -> None:
    pixels = tree_files()
    path = write_tree({rel: png(a) for rel, a in pixels.items()}, kind, tmp_path, "cifar10")
    check_tree(load_dataset(folder_cfg(path, tmp_path), seed=0), pixels)


def test_image_folder_grayscale(tmp_path: Path) -> None:
    pixels = tree_files()
    path = write_tree({rel: png(a) for rel, a in pixels.items()}, "tar", tmp_path)
    ds = load_dataset(folder_cfg(path, tmp_path, channels=1), seed=0)
    assert ds.train_images.shape == (6, 8, 8, 1)
    expected = np.asarray(Image.fromarray(pixels["train/ant/img0.png"]).convert("L"))
    np.testing.assert_array_equal(ds.train_images[0, :, :, 0], expected)


def test_image_folder_corrupt_archive_names_file(tmp_path: Path) -> None:
    good = write_tree({rel: png(a) for rel, a in tree_files().items()}, "tar.gz", tmp_path)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cannot read .*broken\.tar\.gz \("):
        load_dataset(folder_cfg(broken, tmp_path), seed=0)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match=r"junk\.zip"):
        load_dataset(folder_cfg(junk, tmp_path), seed=0)


def test_image_folder_missing_test_split(tmp_path: Path) -> None:
    files = {rel: png(a) for rel, a in tree_files().items() if rel.startswith("train/")}
    path = write_tree(files, "zip", tmp_path)
    with pytest.raises(DataError, match=r"tree\.zip has no test/"):
        load_dataset(folder_cfg(path, tmp_path), seed=0)


def test_image_folder_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset\.path=.*nowhere.* does not exist"):
        load_dataset(folder_cfg(tmp_path / "nowhere", tmp_path), seed=0)


def test_image_folder_bad_images_name_the_file(tmp_path: Path) -> None:
    files = {rel: png(a) for rel, a in tree_files().items()}
    files["train/bee/big.png"] = png(np.zeros((9, 8, 3), dtype=np.uint8))
    path = write_tree(files, "tar", tmp_path)
    with pytest.raises(DataError, match=r"tree\.tar:train/bee/big\.png is 8x9, expected 8x8"):
        load_dataset(folder_cfg(path, tmp_path), seed=0)
    files["train/bee/big.png"] = b"\x89PNG not really"
    path = write_tree(files, "zip", tmp_path)
    with pytest.raises(DataError, match=r"cannot read image .*tree\.zip:train/bee/big\.png"):
        load_dataset(folder_cfg(path, tmp_path), seed=0)


def test_image_folder_class_mismatch_and_validation(tmp_path: Path) -> None:
    files = {rel: png(a) for rel, a in tree_files().items() if not rel.startswith("test/cat")}
    path = write_tree(files, "dir", tmp_path)
    with pytest.raises(DataError, match="different class folders"):
        load_dataset(folder_cfg(path, tmp_path), seed=0)
    good = write_tree({rel: png(a) for rel, a in tree_files().items()}, "zip", tmp_path)
    message = r"3 classes but dataset\.num_classes=10; set dataset\.num_classes=3"
    with pytest.raises(DataError, match=message):
        load_dataset(folder_cfg(good, tmp_path, num_classes=10), seed=0)


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset\.name='mnist'"):
        load_dataset(make_cfg("cifar10", tmp_path, name="mnist"), seed=0)


# ---------------------------------------------------------------------------- synthetic data


def test_synthetic_shapes_and_determinism(tmp_path: Path) -> None:
    cfg = make_cfg("synthetic", tmp_path)
    ds = load_dataset(cfg, seed=3)
    assert ds.train_images.shape == (5000, 32, 32, 3) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (1000, 32, 32, 3) and ds.train_labels.dtype == np.int64
    assert set(np.unique(ds.train_labels)) == set(range(10)) and ds.test_labels.max() < 10
    assert np.bincount(ds.train_labels).min() >= 450 and len(ds.classes) == 10
    fresh = synthetic.generate(**synthetic.params_from_cfg(cfg, seed=3))
    np.testing.assert_array_equal(fresh.train_images, ds.train_images)
    np.testing.assert_array_equal(fresh.test_labels, ds.test_labels)
    other = synthetic.generate(**synthetic.params_from_cfg(cfg, seed=4))
    assert not np.array_equal(other.train_images, ds.train_images)


def test_synthetic_is_learnable_but_not_trivial(tmp_path: Path) -> None:
    ds = synthetic.generate(**synthetic.params_from_cfg(make_cfg("synthetic", tmp_path), seed=0))
    train = ds.train_images.reshape(len(ds.train_images), -1).astype(np.float32)
    test = ds.test_images.reshape(len(ds.test_images), -1).astype(np.float32)
    centroids = np.stack([train[ds.train_labels == k].mean(0) for k in range(10)])
    distances = (test**2).sum(1)[:, None] - 2 * test @ centroids.T + (centroids**2).sum(1)
    accuracy = (distances.argmin(1) == ds.test_labels).mean()
    assert 0.3 < accuracy < 0.95  # nearest class mean: far above chance (0.1), far from perfect


def test_synthetic_options(tmp_path: Path) -> None:
    small = {"num_train": 40, "num_test": 8, "num_classes": 4, "channels": 1, "image_size": 16}
    cfg = make_cfg("synthetic", tmp_path, **small)
    ds = load_dataset(cfg, seed=0)
    assert ds.train_images.shape == (40, 16, 16, 1) and ds.classes[-1] == "class_3"


# ------------------------------------------------------------------------------------ cache


def cache_dirs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "data" / "cache").iterdir())


def test_cache_second_load_is_memmap_and_identical(tmp_path: Path) -> None:
    cfg = make_cfg("synthetic", tmp_path, num_train=100, num_test=20)
    first = load_dataset(cfg, seed=1)
    second = load_dataset(cfg, seed=1)
    assert isinstance(second.train_images, np.memmap) and not second.train_images.flags.writeable
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert second.classes == first.classes and second.name == "synthetic"
    (key_dir,) = cache_dirs(tmp_path)
    names = sorted(p.name for p in key_dir.iterdir())
    assert names == ["meta.json"] + sorted(f"{n}.npy" for n in cache.ARRAYS)
    load_dataset(cfg, seed=2)
    assert len(cache_dirs(tmp_path)) == 2  # the seed is part of the key


def test_cache_without_meta_or_with_bad_shapes_is_rebuilt(tmp_path: Path) -> None:
    cfg = make_cfg("synthetic", tmp_path, num_train=50, num_test=10)
    loaded = load_dataset(cfg, seed=0)
    train_images, test_labels = np.array(loaded.train_images), np.array(loaded.test_labels)
    del loaded  # the damage below replaces files these arrays map
    (key_dir,) = cache_dirs(tmp_path)
    (key_dir / "meta.json").unlink()
    (key_dir / "train_images.npy").unlink()
    np.save(key_dir / "train_images.npy", np.zeros((3, 32, 32, 3), dtype=np.uint8))
    np.testing.assert_array_equal(load_dataset(cfg, seed=0).train_images, train_images)
    (key_dir / "test_labels.npy").unlink()
    np.save(key_dir / "test_labels.npy", np.zeros(4, dtype=np.int64))  # meta.json says (10,)
    np.testing.assert_array_equal(load_dataset(cfg, seed=0).test_labels, test_labels)
    assert [p.name for p in cache_dirs(tmp_path)] == [key_dir.name]  # no temp dirs left behind


def test_cache_invalidated_when_source_changes(tmp_path: Path) -> None:
    pixels = tree_files()
    path = write_tree({rel: png(a) for rel, a in pixels.items()}, "tar.gz", tmp_path)
    cfg = folder_cfg(path, tmp_path)
    check_tree(load_dataset(cfg, seed=0), pixels)
    pixels["train/bee/img0.png"] = 255 - pixels["train/bee/img0.png"]
    write_tree({rel: png(a) for rel, a in pixels.items()}, "tar.gz", tmp_path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    check_tree(load_dataset(cfg, seed=0), pixels)
    assert len(cache_dirs(tmp_path)) == 2


def test_cache_interrupted_write_is_never_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg("synthetic", tmp_path, num_train=30, num_test=5)
    real_save = np.save

    def save_then_die(file, array, **kwargs) -> None:  # killed after the first array
        real_save(file, array, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(cfg, seed=0)
    monkeypatch.undo()
    assert cache_dirs(tmp_path) == []  # nothing was published (the temp dir was cleaned up)
    key = cache.make_key("synthetic", {"source": "synthetic", **synthetic.params_from_cfg(cfg, 0)})
    leftover = tmp_path / "data" / "cache" / f".tmp-{key}-killed"  # as a SIGKILL would leave it
    leftover.mkdir()
    real_save(leftover / "train_images.npy", np.zeros((30, 32, 32, 3), dtype=np.uint8))
    ds = load_dataset(cfg, seed=0)
    assert ds.train_images.any() and isinstance(ds.train_images, np.memmap)
    assert (tmp_path / "data" / "cache" / key / "meta.json").is_file()


def test_cache_unwritable_data_dir_falls_back_to_memory(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data folder should be")
    ds = load_dataset(make_cfg("synthetic", tmp_path, num_train=30, num_test=5), seed=0)
    assert ds.train_images.shape == (30, 32, 32, 3) and not isinstance(ds.train_images, np.memmap)


def test_path_override_in_struct_mode_and_empty_path(tmp_path: Path) -> None:
    cfg = make_cfg("synthetic", tmp_path, num_train=30, num_test=5, path="")
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    assert load_dataset(cfg, seed=0).name == "synthetic"  # "" counts as no path


def test_cache_concurrent_writer_wins(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    made = synthetic.generate(20, 5, 2, 1, 8, 0.5, seed=0)

    def build() -> Dataset:  # another run publishes the same key while this one decodes
        cache.load_or_build(root, "k", lambda: made)
        return synthetic.generate(20, 5, 2, 1, 8, 0.5, seed=99)

    ds = cache.load_or_build(root, "k", build)
    np.testing.assert_array_equal(ds.train_images, made.train_images)  # the first copy is kept
    assert [p.name for p in root.iterdir()] == ["k"]


def test_channel_stats_equal_numpy_per_channel_and_leave_a_constant_channel_unscaled():
    from sim.data.stats import channel_stats

    images = np.random.default_rng(3).integers(0, 256, (5000, 8, 8, 3), dtype=np.uint8)
    images[..., 2] = 7  # a constant channel: std 0, left unscaled (1.0) rather than divided by 0
    mean, std = channel_stats(images)
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(0), atol=6e-5)  # rounded to 4 digits
    np.testing.assert_allclose(std[:2], pixels.std(0)[:2], atol=6e-5)
    assert std[2] == 1.0
    with pytest.raises(ValueError, match="uint8"):
        channel_stats(images.astype(np.int16))
