"""Own models and data for the bring-your-own tests: a model unlike the CNN, an image folder, a HF copy.

`POOLNET` names `helpers.own_data.PoolNet`, so a `python -m sim` subprocess finds it when `tests/`
is on its PYTHONPATH. The Hugging Face hub is never contacted (tests/conftest.py sets it offline).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from sim.data import synthetic


class PoolNet(nn.Module):
    """A model whose constructor shares no argument with `sim.models.cnn.Net`."""

    def __init__(self, colours: int, n_out: int, hidden: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(colours * 16, hidden), nn.ReLU(), nn.Linear(hidden, n_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


POOLNET = [
    "model=custom", "model._target_=helpers.own_data.PoolNet", "+model.colours=${dataset.channels}",
    "+model.n_out=${dataset.num_classes}", "+model.hidden=8",
]


def png(array: np.ndarray) -> bytes:
    """One image (H, W, C uint8) as PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(out, format="PNG")
    return out.getvalue()


def gray_folder(root: Path, num_train: int = 400, num_test: int = 100, classes: int = 4) -> tuple[Path, object]:
    """A learnable grayscale 28x28 image folder as a .zip: train/c<k>/*.png, test/c<k>/*.png."""
    ds = synthetic.generate(num_train, num_test, classes, channels=1, image_size=28, noise=0.2, seed=1)
    path = root / "digits.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for split, images, labels in (("train", ds.train_images, ds.train_labels), ("test", ds.test_images, ds.test_labels)):
            for i, (image, label) in enumerate(zip(images, labels)):
                archive.writestr(f"{split}/c{label}/{i:04d}.png", png(image))
    return path, ds


def hf_copy(root: Path, writers: int = 6, per_writer: int = 40) -> tuple[Path, object]:
    """A tiny DatasetDict (Image feature, ClassLabel, string writer ids) saved with save_to_disk."""
    import datasets

    n = writers * per_writer
    ds = synthetic.generate(n, 60, 3, channels=3, image_size=16, noise=0.2, seed=2)
    rng = np.random.default_rng(0)
    writer = [f"w{w:02d}" for w in rng.integers(0, writers, n)]
    features = datasets.Features(
        {"img": datasets.Image(), "fine": datasets.ClassLabel(names=["ant", "bee", "cat"]), "writer_id": datasets.Value("string")}
    )

    def split(images, labels, ids):
        rows = {"img": [Image.fromarray(x) for x in images], "fine": labels.tolist(), "writer_id": ids}
        return datasets.Dataset.from_dict(rows, features=features)

    tests = [f"w{w:02d}" for w in range(len(ds.test_labels))]
    dd = datasets.DatasetDict(
        train=split(ds.train_images, ds.train_labels, writer), test=split(ds.test_images, ds.test_labels, tests)
    )
    path = root / "tiny_hf"
    dd.save_to_disk(str(path))
    return path, (ds, writer)
