"""Data sources: one `load_dataset(cfg, seed)` for every `dataset/` option.

Dispatch on the `dataset` config node:

1. `dataset.path` set       -> image-folder tree or archive (`image_folder.py`), any name;
2. `dataset.name=cifar10`   -> the official python archive, downloaded into `data_dir`
                               (`cifar10.py`);
3. `dataset.name=synthetic` -> generated from the seed (`synthetic.py`).

Every source is decoded once and cached as `.npy` files under `<data_dir>/cache/` (`cache.py`);
later loads memory-map the cache. The result is checked against `image_size`, `channels` and
`num_classes`, and every failure is one `DataError` that names the file or the key to change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["DataError", "Dataset", "load_dataset"]


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


def load_dataset(cfg: Any, seed: int) -> Dataset:
    """Load (or decode once and cache) the data set that the `dataset` config node `cfg` names.

    `seed` only matters for generated data. Raises `DataError` for any problem with the source.
    """
    # Imported here so that `sim.data` stays importable by the submodules (they need DataError).
    from sim.data import cache, cifar10, image_folder, synthetic

    data_dir = Path(str(cfg.data_dir)).expanduser()
    name = str(cfg.name)
    if cfg.get("path") not in (None, ""):
        path = Path(str(cfg.path)).expanduser()
        channels = int(cfg.channels)
        identity = {"source": "image_folder", "channels": channels, **cache.path_identity(path)}
        build = partial(
            image_folder.read_image_folder,
            path,
            name=name,
            channels=channels,
            image_size=int(cfg.image_size),
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
    """Check the arrays against `image_size`, `channels` and `num_classes` of `cfg`."""
    size, channels = int(cfg.image_size), int(cfg.channels)
    for split, images, labels in (
        ("train", dataset.train_images, dataset.train_labels),
        ("test", dataset.test_images, dataset.test_labels),
    ):
        if images.ndim != 4 or images.shape[1:] != (size, size, channels):
            shape = "x".join(map(str, images.shape[1:]))
            raise DataError(
                f"{dataset.name} {split} images are {shape} (HxWxC) but the config says "
                f"{size}x{size}x{channels}; set dataset.image_size and dataset.channels to match"
            )
        if len(images) != len(labels) or len(images) == 0:
            raise DataError(
                f"{dataset.name} {split} split has {len(images)} images and {len(labels)} labels"
            )
    num_classes = len(dataset.classes)
    if num_classes != int(cfg.num_classes):
        raise DataError(
            f"{dataset.name} has {num_classes} classes but dataset.num_classes={cfg.num_classes}; "
            f"set dataset.num_classes={num_classes}"
        )
    for labels in (dataset.train_labels, dataset.test_labels):
        if labels.min() < 0 or labels.max() >= num_classes:
            raise DataError(f"{dataset.name} has labels outside 0..{num_classes - 1}")
