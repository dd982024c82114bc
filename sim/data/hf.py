"""Hugging Face data sets, as Flower's flwr-datasets uses them, decoded into the uint8 cache.

    python -m sim dataset=hf dataset.repo=uoft-cs/cifar100 dataset.label_column=fine_label
    python -m sim dataset=hf dataset.path=/data/my_set      # `save_to_disk` folder or parquet files
    python -m sim dataset=femnist                           # presets: cifar100, mnist, fashion_mnist, femnist

`dataset.path` (offline) is a `DatasetDict.save_to_disk` folder, a single split's
`Dataset.save_to_disk` folder, a `.parquet` file or a folder of them (split by file name:
`train*.parquet`, `test*.parquet`, also under `data/`); otherwise `dataset.repo` is
downloaded from the hub with `datasets.load_dataset` into `<data_dir>/hf`. The image column
(an `Image` feature, or arrays) is decoded like an image folder (`image_folder.decode_images`:
channels and size inferred or resized), the label column becomes int64 class indices
(`ClassLabel` names kept), and every other integer, bool or string column of the train split
is kept as int64 codes of its sorted unique values (`Dataset.columns`), so
`partition=natural partition.by=writer_id` can give one client per writer. Without a test
split, `test_fraction` of train is held out (a fixed seeded draw). The whole result lands in
the same `.npy` cache as every other source: the hub and `datasets` are touched only once.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import urllib.parse
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sim.data import DataError, Dataset

logger = logging.getLogger(__name__)

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
PROBE_TIMEOUT_S = 3
TEST_SPLIT_SEED = 0  # the held-out test draw when the source has no test split; fixed, so caches agree
POINT_AT_COPY = (
    "point at a local copy with dataset.path=DIR (a `save_to_disk` folder or .parquet files; "
    "on a machine online: datasets.load_dataset({repo!r}).save_to_disk(DIR))"
)


def plan(cfg: Any, name: str, data_dir: Path) -> tuple[dict[str, Any], Callable[[], Dataset]]:
    """(cache identity, builder) for the `dataset` node `cfg` of a Hugging Face source."""
    from sim.data.cache import path_identity

    path, repo = cfg.get("path"), cfg.get("repo")
    settings = {
        "image_column": str(cfg.image_column), "label_column": str(cfg.label_column),
        "train_split": str(cfg.train_split),
        "test_split": None if cfg.get("test_split") is None else str(cfg.test_split),
        "test_fraction": float(cfg.get("test_fraction", 0.1)),
        "channels": None if cfg.get("channels") is None else int(cfg.channels),
        "image_size": None if cfg.get("image_size") is None else int(cfg.image_size),
        "resize": bool(cfg.get("resize", False)),
    }
    if path not in (None, ""):
        local = Path(str(path)).expanduser()
        identity = {"source": "hf", **path_identity(local), **settings}
        load = partial(_load_local, local)
    elif repo not in (None, ""):
        identity = {"source": "hf", "repo": str(repo), **settings}
        load = partial(_load_hub, str(repo), data_dir / "hf")
    else:
        raise DataError("dataset=hf needs dataset.repo=OWNER/NAME (online) or dataset.path=DIR (a local copy)")
    return identity, partial(_build, load, name, **settings)


def _go_offline_unless_reachable() -> None:
    """Put `datasets` in offline mode when asked (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) or
    when the hub cannot be reached (one 3 s probe).

    Offline, the hub client retries for most of a minute before it gives up; offline mode
    answers at once from `datasets`' own cache, or fails at once without a copy. The
    libraries read the variables when imported, so copies already imported are set too.
    """
    offline = any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE") for k in OFFLINE_ENV)
    if not offline:
        host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
        try:
            socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
            return
        except OSError:
            logger.debug("the Hugging Face hub (%s) is unreachable: offline mode", host)
    for key in OFFLINE_ENV:
        os.environ[key] = "1"
    for module, attr in (
        ("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_DATASETS_OFFLINE"),
    ):
        if module in sys.modules:
            setattr(sys.modules[module], attr, True)


def _load_hub(repo: str, cache_dir: Path) -> Any:
    """The hub data set `repo` as a DatasetDict (downloaded once into `cache_dir`)."""
    _go_offline_unless_reachable()
    import datasets
    import huggingface_hub

    datasets.logging.set_verbosity_error()  # their retry warnings would make the one-line error many
    huggingface_hub.utils.logging.set_verbosity_error()
    try:
        return datasets.load_dataset(repo, cache_dir=str(cache_dir))
    except Exception as exc:  # offline, unknown repo, gated, damaged cache: all one line
        reason = " ".join(str(exc).split())[:160]
        raise DataError(
            f"cannot load dataset.repo={repo} from the Hugging Face hub ({type(exc).__name__}: {reason}); "
            + POINT_AT_COPY.format(repo=repo)
        ) from None


def _load_local(path: Path) -> Any:
    """A local copy: `save_to_disk` folder (dict or one split) or parquet file(s)."""
    import datasets

    if not path.exists():
        raise DataError(f"dataset.path={path} does not exist")
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            return datasets.load_from_disk(str(path))
        files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
        if not files or any(f.suffix != ".parquet" for f in files):
            raise DataError(
                f"dataset.path={path} is neither a save_to_disk folder nor .parquet files "
                "(dataset=hf reads those; an image-folder tree is dataset=folder)"
            )
        splits: dict[str, list[str]] = {}
        for file in files:
            split = re.split(r"[-_.]", file.name, maxsplit=1)[0]
            splits.setdefault(split, []).append(str(file))
        return datasets.load_dataset("parquet", data_files=splits)
    except DataError:
        raise
    except Exception as exc:  # datasets/pyarrow raise many types on damaged copies
        raise DataError(f"cannot read the Hugging Face data set at {path} ({type(exc).__name__}: {exc})") from None


def _split(source: Any, split: str | None, where: str) -> Any:
    """One split of a DatasetDict (a single Dataset is the train split)."""
    import datasets

    if isinstance(source, datasets.Dataset):
        return source if split == "train" else None
    if split is None:
        return None
    if split not in source:
        raise DataError(f"{where} has no split {split!r} (it has {', '.join(source)}); set dataset.{where}")
    return source[split]


def _build(
    load: Callable[[], Any], name: str, image_column: str, label_column: str, train_split: str,
    test_split: str | None, test_fraction: float, channels: int | None, image_size: int | None, resize: bool,
) -> Dataset:
    """Decode the train and test splits into a `Dataset`."""
    source = load()
    train = _split(source, train_split, "train_split")
    if train is None:
        raise DataError(f"the data set has no split {train_split!r}; set dataset.train_split")
    test = _split(source, test_split, "test_split") if test_split is not None else None
    if test_split is not None and test is None:
        raise DataError(f"the data set is a single split; set dataset.test_split=null to hold out test_fraction")
    for column in (image_column, label_column):
        if column not in train.column_names:
            key = "image_column" if column == image_column else "label_column"
            raise DataError(
                f"dataset.{key}={column} is not a column of {name} (columns: {', '.join(train.column_names)})"
            )
    classes, train_labels, test_labels = _labels(train, test, label_column)
    train_images = _images(train, image_column, channels, image_size, resize, name)
    channels, image_size = train_images.shape[3], train_images.shape[1]  # the test split must follow train
    columns = _columns(train, {image_column, label_column})
    if test is None:
        order = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(train_labels))
        n_test = max(1, int(round(len(order) * test_fraction)))
        test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
        test_images, test_labels = train_images[test_idx], train_labels[test_idx]
        train_images, train_labels = train_images[train_idx], train_labels[train_idx]
        columns = {k: v[train_idx] for k, v in columns.items()}
    else:
        test_images = _images(test, image_column, channels, image_size, resize, name)
    logger.debug("decoded Hugging Face data set %s (%d train images)", name, len(train_labels))
    return Dataset(
        train_images=train_images, train_labels=train_labels, test_images=test_images,
        test_labels=test_labels, classes=classes, name=name, columns=columns,
    )


def _labels(train: Any, test: Any, column: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray | None]:
    """Class names and int64 labels of both splits (`ClassLabel` names, else sorted unique values)."""
    feature = train.features[column]
    train_raw = np.asarray(train[column])
    test_raw = None if test is None else np.asarray(test[column])
    names = getattr(feature, "names", None)
    if names:
        return tuple(str(n) for n in names), train_raw.astype(np.int64), None if test is None else test_raw.astype(np.int64)
    if np.issubdtype(train_raw.dtype, np.integer):
        top = int(max(train_raw.max(), -1 if test_raw is None else test_raw.max()))
        classes = tuple(str(i) for i in range(top + 1))
        return classes, train_raw.astype(np.int64), None if test is None else test_raw.astype(np.int64)
    values = np.unique(train_raw if test_raw is None else np.concatenate([train_raw, test_raw]))
    index = {v: i for i, v in enumerate(values.tolist())}
    encode = lambda raw: np.array([index[v] for v in raw.tolist()], dtype=np.int64)  # noqa: E731
    return tuple(str(v) for v in values), encode(train_raw), None if test is None else encode(test_raw)


def _images(split: Any, column: str, channels: int | None, size: int | None, resize: bool, name: str) -> np.ndarray:
    """uint8 (N, size, size, channels) images of one split: an `Image` feature or numeric arrays."""
    import datasets

    from sim.data.image_folder import decode_images

    if isinstance(split.features[column], datasets.Image):
        values = split.cast_column(column, datasets.Image(decode=False))[column]
        items = []
        for i, value in enumerate(values):
            data = value.get("bytes") or (Path(value["path"]).read_bytes() if value.get("path") else None)
            if data is None:
                raise DataError(f"{name} row {i}: the image column {column!r} holds neither bytes nor a path")
            items.append((f"{name}[{i}].{column}", data))
        return decode_images(items, channels, size, resize)
    array = np.asarray(split.with_format("numpy")[column])
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[1] != array.shape[2] or array.shape[3] not in (1, 3):
        raise DataError(f"{name} column {column!r} holds arrays of shape {array.shape[1:]}, not images (HxW or HxWxC)")
    if array.dtype != np.uint8:
        raise DataError(f"{name} column {column!r} holds {array.dtype} arrays; uint8 pixels are needed")
    if (channels is not None and channels != array.shape[3]) or (size is not None and size != array.shape[1]):
        raise DataError(
            f"{name} column {column!r} holds {'x'.join(map(str, array.shape[1:]))} arrays; "
            "set dataset.channels and dataset.image_size to null (array columns are not converted)"
        )
    return np.ascontiguousarray(array)


def _columns(split: Any, skip: set[str]) -> dict[str, np.ndarray]:
    """Integer, bool and string columns (besides image and label) as int64 codes of sorted unique values."""
    import datasets

    out = {}
    for column, feature in split.features.items():
        if column in skip or not re.fullmatch(r"[A-Za-z0-9_.-]+", column):
            continue
        kind = getattr(feature, "dtype", "")
        if isinstance(feature, datasets.ClassLabel) or kind in ("string", "large_string", "bool") or str(kind).startswith(("int", "uint")):
            _, codes = np.unique(np.asarray(split[column]), return_inverse=True)
            out[column] = codes.astype(np.int64).reshape(-1)
    return out
