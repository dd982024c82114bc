"""Decode once, memory-map afterwards: the `.npy` cache under `<data_dir>/cache/<key>/`.

The key hashes the source's identity (path, size and mtime of files; every generator
parameter and the seed for synthetic data) plus `FORMAT_VERSION`. A cache directory holds
`train_images.npy`, `train_labels.npy`, `test_images.npy`, `test_labels.npy` and, written last,
`meta.json`. It is built in a temporary sibling directory and renamed into place in one
`os.replace`, so a killed run leaves only a `.tmp-*` directory that nobody trusts, and of two
concurrent writers the second simply discards its copy. A directory without `meta.json`, or whose
arrays do not match it, is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sim.data import DataError, Dataset
from sim.data.stats import channel_stats

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: meta.json holds per-channel mean/std and extra columns; bump when the decoded arrays change for the same source
ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
STALE_TMP_S = 3600  # temporary dirs older than this are leftovers of killed runs


def path_identity(path: Path) -> dict[str, Any]:
    """Identity of a source file (absolute path, size, mtime_ns) or of a directory tree."""
    if not path.exists():
        raise DataError(f"dataset.path={path} does not exist")
    path = path.resolve()
    if path.is_file():
        stat = path.stat()
        return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = Path(root, name)
            stat = file.stat()
            entry = f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
            digest.update(entry.encode())
    return {"path": str(path), "tree": digest.hexdigest()}


def make_key(name: str, identity: dict[str, Any]) -> str:
    """Cache directory name: the data set name plus a hash of the source identity and format."""
    blob = json.dumps({"format": FORMAT_VERSION, "name": name, **identity}, sort_keys=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "data"
    return f"{safe}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def load_or_build(cache_root: Path, key: str, build: Callable[[], Dataset]) -> Dataset:
    """Return the cached data set `key` memory-mapped, building and caching it first if needed."""
    final = cache_root / key
    cached = _read(final, key)
    if cached is not None:
        logger.debug("loaded cached %s from %s", cached.name, final)
        return cached
    started = time.perf_counter()
    dataset = build()
    mean, std = channel_stats(dataset.train_images)
    dataset = replace(dataset, mean=mean, std=std)
    seconds = time.perf_counter() - started
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(cache_root, key)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=cache_root))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
            _write(tmp, key, dataset)
            _publish(tmp, final, key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        message = "cannot cache %s in %s (%s); using it uncached. Check dataset.data_dir"
        logger.warning(message, dataset.name, cache_root, exc)
        return dataset
    cached = _read(final, key)
    if cached is None:
        logger.warning("the cache %s is unreadable right after writing; using it uncached", final)
        return dataset
    logger.info("decoded %s in %.1f s; cached in %s", dataset.name, seconds, final)
    return cached


def _read(directory: Path, key: str) -> Dataset | None:
    """The data set in `directory` memory-mapped, or None unless it is complete and consistent."""
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        if directory.exists():
            logger.warning("ignoring incomplete cache %s (no meta.json); rebuilding", directory)
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta["key"] != key or meta["format"] != FORMAT_VERSION:
            raise ValueError("key or format differs")
        arrays = {}
        for name in ARRAYS:
            array = np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            spec = meta["arrays"][name]
            if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
                found = f"{array.dtype}{list(array.shape)}"
                raise ValueError(f"{name}.npy is {found}, meta.json says {spec}")
            arrays[name] = array
        columns = {}
        for name in meta["columns"]:
            column = np.load(directory / f"train_col_{name}.npy", mmap_mode="r", allow_pickle=False)
            if column.shape != arrays["train_labels"].shape:
                raise ValueError(f"column {name} has shape {column.shape}, the labels {arrays['train_labels'].shape}")
            columns[name] = column
        return Dataset(
            **arrays, classes=tuple(meta["classes"]), name=meta["name"],
            mean=tuple(meta["mean"]), std=tuple(meta["std"]), columns=columns,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring damaged cache %s (%s); rebuilding", directory, exc)
        return None


def _write(directory: Path, key: str, dataset: Dataset) -> None:
    """Save every array of `dataset` into `directory`, then `meta.json` last."""
    arrays = {
        "train_images": np.ascontiguousarray(dataset.train_images, dtype=np.uint8),
        "train_labels": np.ascontiguousarray(dataset.train_labels, dtype=np.int64),
        "test_images": np.ascontiguousarray(dataset.test_images, dtype=np.uint8),
        "test_labels": np.ascontiguousarray(dataset.test_labels, dtype=np.int64),
        **{f"train_col_{n}": np.ascontiguousarray(c, dtype=np.int64) for n, c in dataset.columns.items()},
    }
    for name, array in arrays.items():
        with open(directory / f"{name}.npy", "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
    meta = {
        "key": key,
        "format": FORMAT_VERSION,
        "name": dataset.name,
        "classes": list(dataset.classes),
        "mean": list(dataset.mean or ()),
        "std": list(dataset.std or ()),
        "columns": sorted(dataset.columns),
        "arrays": {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in arrays.items() if n in ARRAYS},
    }
    with open(directory / "meta.json", "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _publish(tmp: Path, final: Path, key: str) -> None:
    """Rename `tmp` onto `final`; keep a valid `final` another writer got there first with."""
    for _ in range(3):
        try:
            os.replace(tmp, final)
            return
        except OSError:
            if not final.exists():
                raise
        if _read(final, key) is not None:
            logger.debug("another run cached %s meanwhile; discarding this copy", final)
            return
        # An untrusted leftover: move it aside (atomic), then delete it.
        trash = final.with_name(f".trash-{final.name}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.replace(final, trash)
        except OSError:
            continue  # someone else moved or replaced it; look again
        shutil.rmtree(trash, ignore_errors=True)
    raise OSError(f"cannot replace {final}; delete it and retry")


def _remove_stale_tmp(cache_root: Path, key: str) -> None:
    """Delete temporary or trash dirs of `key` that killed runs left behind long ago."""
    now = time.time()
    for pattern in (f".tmp-{key}-*", f".trash-{key}-*"):
        for leftover in cache_root.glob(pattern):
            try:
                if now - leftover.stat().st_mtime > STALE_TMP_S:
                    shutil.rmtree(leftover, ignore_errors=True)
            except OSError:
                pass
