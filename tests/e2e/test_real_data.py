"""The shared CIFAR-10 copy through the real reader: decoded once per test run into the shared cache.

Slow (the decode of 60,000 JPEGs takes seconds), so it is not in the fast tier; the CIFAR-10
runs of tests/e2e map the same cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import CONF_DIR
from sim.data import load_dataset

CIFAR10_CLASSES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())


@pytest.mark.cifar10
def test_real_cifar10_copy(cifar10_archive: Path, data_dir: Path) -> None:
    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / "dataset" / "cifar10.yaml"),
                          {"data_dir": str(data_dir), "path": str(cifar10_archive)})
    ds = load_dataset(cfg, seed=0)
    assert ds.classes == CIFAR10_CLASSES
    assert ds.train_images.shape == (50_000, 32, 32, 3)
    assert ds.test_images.shape == (10_000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.test_labels), [1000] * 10)
    mean = ds.train_images[::10].reshape(-1, 3).mean(0) / 255
    np.testing.assert_allclose(mean, [0.4913, 0.4821, 0.4465], atol=0.01)
    assert isinstance(ds.train_images, np.memmap)  # read from the cache the fixture filled
