"""Data sources: one `load_dataset(cfg, seed)` for every `dataset/` option.

Dispatch on the `dataset` config node:

0. `dataset.source=hf`      -> a Hugging Face data set, from the hub or a local copy (`hf.py`);
1. `dataset.path` set       -> image-folder tree or archive (`image_folder.py`), any name;
2. `dataset.name=cifar10`   -> the official python archive, downloaded into `data_dir`
                               (`cifar10.py`);
3. `dataset.name=synthetic` -> generated from the seed (`synthetic.py`).

Every source is decoded once and cached as `.npy` files under `<data_dir>/cache/` (`cache.py`);
later loads memory-map the cache, and per-channel mean/std are computed on the first decode and
cached with the arrays. The result is checked against `image_size`, `channels` and
`num_classes` where they are set (null: taken from the data), and every failure is one `DataError` that names the file or the key to change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["DataError", "Dataset", "load_dataset", "source_name"]


class DataError(Exception):
    """One-line, user-facing error (names the file or the override to change)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Decoded images and labels of one data set (arrays may be read-only memmaps)."""

    train_images: np.ndarray  # uint8, (N, H, W, C)
    train_labels: np.ndarray  # int64, (N,)
    test_images: np.ndarray  # uint8, (M, H, W, C)
    test_labels: np.ndarray  # int64, (M,)
    classes: tuple[str, ...]
    name: str
    mean: tuple[float, ...] | None = None  # per-channel train-set statistics in [0, 1] units,
    std: tuple[float, ...] | None = None  # computed on the first decode and cached (sim.data.stats)
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # extra train columns (int64 codes), e.g. writer ids


def source_name(cfg: Any) -> str:
    """The data set's name: `dataset.name`, else the last part of `dataset.repo` or `dataset.path`."""
    if cfg.get("name") not in (None, ""):
        return str(cfg.name)
    where = cfg.get("path") or cfg.get("repo") or "data"
    stem = Path(str(where).rstrip("/")).name.lower()
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip", ".parquet"):
        stem = stem.removesuffix(suffix)
    return stem or "data"


def load_dataset(cfg: Any, seed: int) -> Dataset:
    """Load (or decode once and cache) the data set that the `dataset` config node `cfg` names.

    `seed` only matters for generated data. Raises `DataError` for any problem with the source.
    A null `channels`, `image_size` or `num_classes` is read from the data.
    """
    # Imported here so that `sim.data` stays importable by the submodules (they need DataError).
    from sim.data import cache, cifar10, image_folder, synthetic

    data_dir = Path(str(cfg.data_dir)).expanduser()
    name = source_name(cfg)
    if cfg.get("source") == "hf":
        from sim.data import hf

        identity, build = hf.plan(cfg, name, data_dir)
    elif cfg.get("path") not in (None, ""):
        path = Path(str(cfg.path)).expanduser()
        channels, size = cfg.get("channels"), cfg.get("image_size")
        resize = bool(cfg.get("resize", False))
        identity = {"source": "image_folder", "channels": channels, **cache.path_identity(path)}
        if resize:
            identity.update(image_size=size, resize=True)
        build = partial(
            image_folder.read_image_folder,
            path,
            name=name,
            channels=None if channels is None else int(channels),
            image_size=None if size is None else int(size),
            resize=resize,
        )
    elif name == "cifar10":
        archive = cifar10.ensure_archive(str(cfg.url), str(cfg.md5), data_dir)
        identity = {"source": "cifar10_python", **cache.path_identity(archive)}
        build = partial(cifar10.read_archive, archive, md5=str(cfg.md5))
    elif name == "synthetic":
        params = synthetic.params_from_cfg(cfg, seed)
        identity = {"source": "synthetic", **params}
        build = partial(synthetic.generate, **params)
    else:
        raise DataError(
            f"unknown data set dataset.name={name!r} with dataset.path=null; "
            "use cifar10 or synthetic, or pass an image folder with dataset.path=/path/to/data"
        )
    dataset = cache.load_or_build(data_dir / "cache", cache.make_key(name, identity), build)
    _validate(dataset, cfg)
    logger.info(
        "data set %s: %d train + %d test images of %s, %d classes",
        dataset.name,
        len(dataset.train_labels),
        len(dataset.test_labels),
        "x".join(map(str, dataset.train_images.shape[1:])),
        len(dataset.classes),
    )
    return dataset


def _validate(dataset: Dataset, cfg: Any) -> None:
    """Check the arrays against `image_size`, `channels` and `num_classes` of `cfg` (null: any)."""
    size, channels = cfg.get("image_size"), cfg.get("channels")
    infer = "set it to null to take it from the data" if cfg.get("source") else "dataset=folder infers it"
    for split, images, labels in (
        ("train", dataset.train_images, dataset.train_labels),
        ("test", dataset.test_images, dataset.test_labels),
    ):
        shape = "x".join(map(str, images.shape[1:]))
        if images.ndim != 4 or images.shape[1] != images.shape[2]:
            raise DataError(f"{dataset.name} {split} images are {shape} (HxWxC); square images are needed")
        for key, want, have in (("image_size", size, images.shape[1]), ("channels", channels, images.shape[3])):
            if want is not None and int(want) != have:
                raise DataError(
                    f"{dataset.name} {split} images are {shape} (HxWxC) but dataset.{key}={want}; "
                    f"set dataset.{key}={have} ({infer})"
                )
        if len(images) != len(labels) or len(images) == 0:
            raise DataError(
                f"{dataset.name} {split} split has {len(images)} images and {len(labels)} labels"
            )
    num_classes = len(dataset.classes)
    if cfg.get("num_classes") is not None and num_classes != int(cfg.num_classes):
        raise DataError(
            f"{dataset.name} has {num_classes} classes but dataset.num_classes={cfg.num_classes}; "
            f"set dataset.num_classes={num_classes} ({infer})"
        )
    for labels in (dataset.train_labels, dataset.test_labels):
        if labels.min() < 0 or labels.max() >= num_classes:
            raise DataError(f"{dataset.name} has labels outside 0..{num_classes - 1}")
