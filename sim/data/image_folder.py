"""Image-folder data sets: `train/<class>/*` and `test/<class>/*` as a directory or an archive.

`.tar`, `.tar.gz`/`.tgz` and `.zip` archives are read in memory in one pass (nothing is
extracted to disk); a single top-level folder wrapping `train/` and `test/` is allowed. Class
index = position of the folder name in sorted order, and train and test must have the same
classes. Samples are ordered by (split, class, file name), so the result does not depend on the
order of files in the archive. Channels and image size are inferred unless set (1 channel
when every image is grayscale; the images' common square size), and a set size resizes when
`dataset.resize` allows it (`decode_images`, shared with the Hugging Face reader). Every
problem is one `DataError` that names the file or the key to set.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from sim.data import DataError, Dataset

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MODES = {1: "L", 3: "RGB"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}  # Pillow modes of single-channel images
EXPECTED = "expected train/<class>/* and test/<class>/*"


def read_image_folder(
    path: Path, name: str, channels: int | None, image_size: int | None, resize: bool = False
) -> Dataset:
    """Decode the image folder or archive at `path` into uint8 (N, size, size, channels) arrays.

    `channels` None infers them (1 when every image is grayscale, else 3); `image_size` None
    takes the images' own (common, square) size; a given size resizes other sizes when
    `resize`, else they are an error.
    """
    if not path.exists():
        raise DataError(f"dataset.path={path} does not exist")
    members = _strip_wrapper(_list_files(path), path)
    entries = {
        (parts[0], parts[1], "/".join(parts[2:])): data
        for parts, data in members.items()
        if len(parts) >= 3 and parts[0] in SPLITS
    }
    for split in SPLITS:
        if not any(key[0] == split for key in entries):
            raise DataError(f"{path} has no {split}/<class>/ images ({EXPECTED})")
    classes = {split: sorted({c for s, c, _ in entries if s == split}) for split in SPLITS}
    if classes["train"] != classes["test"]:
        raise DataError(
            f"{path}: train/ and test/ have different class folders "
            f"({', '.join(classes['train'])} vs {', '.join(classes['test'])})"
        )
    index = {c: i for i, c in enumerate(classes["train"])}
    keys = {split: sorted(k for k in entries if k[0] == split) for split in SPLITS}
    items = [(f"{path}:{'/'.join(k)}", entries[k]) for split in SPLITS for k in keys[split]]
    images = decode_images(items, channels, image_size, resize)
    n_train = len(keys["train"])
    labels = {split: np.array([index[c] for _, c, _ in keys[split]], dtype=np.int64) for split in SPLITS}
    return Dataset(
        train_images=images[:n_train],
        train_labels=labels["train"],
        test_images=images[n_train:],
        test_labels=labels["test"],
        classes=tuple(classes["train"]),
        name=name,
    )


def decode_images(
    items: list[tuple[str, bytes]], channels: int | None, image_size: int | None, resize: bool = False
) -> np.ndarray:
    """Decode encoded images (`where`, bytes) into one uint8 (N, size, size, channels) array.

    A first pass reads only the headers to infer channels and size (see `read_image_folder`);
    every error names the image (`where`) and the key to set.
    """
    headers = [_open(data, where) for where, data in items]  # (mode, size): the headers only
    if channels is None:
        channels = 1 if all(mode in GRAY_MODES for mode, _ in headers) else 3
    if image_size is None:
        sizes = {}
        for (where, _), (_, size) in zip(items, headers):
            sizes.setdefault(size, where)
        (width, height), where = next(iter(sizes.items()))
        if len(sizes) > 1 or width != height:
            shown = ", ".join(f"{w}x{h} ({at})" for (w, h), at in list(sizes.items())[:2])
            raise DataError(
                f"images are not all of one square size: {shown}; "
                "set dataset.image_size=N to resize every image to NxN"
            )
        image_size = width
    out = np.empty((len(items), image_size, image_size, channels), dtype=np.uint8)
    for i, (where, data) in enumerate(items):
        out[i] = _decode(Image.open(io.BytesIO(data)), where, MODES[channels], image_size, resize)
    return out


def _open(data: bytes, where: str) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) of an encoded image, from its header."""
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Exception as exc:  # Pillow raises many types on damaged files
        raise DataError(f"cannot read image {where} ({exc})") from exc
    return image.mode, image.size


def _decode(image: Image.Image, where: str, mode: str, size: int, resize: bool) -> np.ndarray:
    """One opened image as a (size, size, channels) uint8 array."""
    try:
        if image.size != (size, size):
            if not resize:
                width, height = image.size
                expected = f"expected {size}x{size} (dataset.image_size)"
                raise DataError(f"{where} is {width}x{height}, {expected}")
            image = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
        array = np.asarray(image if image.mode == mode else image.convert(mode))
    except DataError:
        raise
    except Exception as exc:  # Pillow raises many types on damaged files
        raise DataError(f"cannot read image {where} ({exc})") from exc
    return array[..., None] if array.ndim == 2 else array


def _keep(name: str) -> tuple[str, ...] | None:
    """Path parts of an archive/dir member worth reading (an image, not hidden), else None."""
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    if os.path.splitext(parts[-1])[1].lower() not in IMAGE_SUFFIXES:
        return None
    return parts


def _list_files(path: Path) -> dict[tuple[str, ...], bytes]:
    """Every image file under `path` (a directory or an archive) as path parts -> bytes."""
    files: dict[tuple[str, ...], bytes] = {}
    lower = path.name.lower()
    try:
        if path.is_dir():
            for root, _, names in os.walk(path):
                for file_name in names:
                    file = Path(root, file_name)
                    parts = _keep(file.relative_to(path).as_posix())
                    if parts is not None:
                        files[parts] = file.read_bytes()
        elif lower.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    parts = None if info.is_dir() else _keep(info.filename)
                    if parts is not None:
                        files[parts] = archive.read(info)
        elif lower.endswith(TAR_SUFFIXES):
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    parts = _keep(member.name) if member.isfile() else None
                    if parts is not None:
                        fh = archive.extractfile(member)
                        assert fh is not None  # regular files always have a payload
                        files[parts] = fh.read()
        else:
            raise DataError(
                f"dataset.path={path} is neither a directory nor a .tar/.tar.gz/.tgz/.zip archive"
            )
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc})") from exc
    return files


def _strip_wrapper(files: dict[tuple[str, ...], bytes], path: Path) -> dict[tuple[str, ...], bytes]:
    """Drop a single top-level folder that wraps train/ and test/, if there is one."""
    if not files:
        raise DataError(f"{path} holds no image files ({EXPECTED})")
    if any(parts[0] in SPLITS for parts in files):
        return files
    tops = {parts[0] for parts in files}
    if len(tops) == 1 and any(len(parts) > 1 and parts[1] in SPLITS for parts in files):
        logger.debug("image folder %s is wrapped in %s/", path, tops.pop())
        return {parts[1:]: data for parts, data in files.items() if len(parts) > 1}
    raise DataError(
        f"{path} has no train/ and test/ folders at the top or inside one wrapper folder "
        f"(found {', '.join(sorted(tops)[:5])})"
    )
