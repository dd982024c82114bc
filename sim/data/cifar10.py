"""The official CIFAR-10 python archive: download on first use, then read it without extracting.

`ensure_archive` fetches `dataset.url` into `dataset.data_dir` (to a temporary file that is
renamed into place only after its md5 matches `dataset.md5`). `read_archive` reads the pickled
batches (`cifar-10-batches-py/data_batch_1..5`, `test_batch`, `batches.meta`) straight from the
`.tar.gz`. The pickles are loaded with an unpickler that accepts numpy arrays and nothing else.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sim.data import DataError, Dataset

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 20
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
SIDE, CHANNELS = 32, 3
# The only globals a CIFAR-10 pickle may name: numpy's array reconstruction and bytes decoding.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


def ensure_archive(url: str, md5: str, data_dir: Path) -> Path:
    """Path of the archive in `data_dir`, downloading and checking it first if it is missing."""
    dest = data_dir / (Path(urllib.parse.urlparse(url).path).name or "cifar-10-python.tar.gz")
    if dest.is_file():
        return dest
    logger.info("downloading CIFAR-10 from %s to %s", url, dest)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {data_dir} ({exc}); check dataset.data_dir") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=data_dir)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(
                f"download of {url} into {dest} has md5 {digest.hexdigest()}, expected {md5} "
                "(dataset.md5); the file was deleted"
            )
        os.replace(tmp, dest)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DataError(
            f"cannot download CIFAR-10 from {url} ({reason}); no local copy at {dest}. "
            "Pass a local copy with dataset.path=/path/to/cifar10 "
            "(an image-folder DIR or .tar/.tar.gz/.zip archive)"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def file_md5(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_archive(path: Path, md5: str | None = None) -> Dataset:
    """Decode the CIFAR-10 python archive at `path` (checking its md5 first when given)."""
    if md5 is not None and (actual := file_md5(path)) != md5:
        raise DataError(
            f"{path} has md5 {actual}, expected {md5} (dataset.md5); delete it to download it again"
        )
    wanted = {*TRAIN_BATCHES, TEST_BATCH, META}
    found: dict[str, dict[bytes, Any]] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted and base not in found:
                    fh = tar.extractfile(member)
                    assert fh is not None  # regular files always have a payload
                    found[base] = _unpickle(fh.read(), f"{path}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read the CIFAR-10 archive {path} ({exc})") from exc
    missing = sorted(wanted - found.keys())
    if missing:
        raise DataError(f"{path} is not a CIFAR-10 python archive: no {', '.join(missing)}")
    train = [_batch(found[name], f"{path}:{name}") for name in TRAIN_BATCHES]
    test_images, test_labels = _batch(found[TEST_BATCH], f"{path}:{TEST_BATCH}")
    names = found[META].get(b"label_names")
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}:{META} has no label_names list")
    return Dataset(
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=test_images,
        test_labels=test_labels,
        classes=tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names),
        name="cifar10",
    )


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals an array needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def _unpickle(payload: bytes, where: str) -> dict[bytes, Any]:
    """Load one pickled batch dict (Python 2 pickles: `encoding="bytes"`)."""
    try:
        obj = _NumpyUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except Exception as exc:  # pickle raises many types on bad input
        raise DataError(f"cannot unpickle {where} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{where} does not hold a dict")
    return obj


def _batch(batch: dict[bytes, Any], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels (N,) int64 of one batch dict."""
    data, labels = batch.get(b"data"), batch.get(b"labels")
    row = SIDE * SIDE * CHANNELS
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != row or labels is None:
        raise DataError(f"{where} is not a CIFAR-10 batch (needs {row}-byte data rows and labels)")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data):
        raise DataError(f"{where} has {len(data)} images but {len(labels)} labels")
    chw = data.astype(np.uint8, copy=False).reshape(-1, CHANNELS, SIDE, SIDE)
    return np.ascontiguousarray(chw.transpose(0, 2, 3, 1)), labels
