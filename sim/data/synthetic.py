"""A learnable, class-conditional, CIFAR-shaped data set generated from the seed.

Each class has a smooth random template: a periodic field built from a few low spatial
frequencies, one per channel. An image of class k is that template, circularly shifted by a
random offset, with random contrast and brightness, plus gaussian pixel noise of std
`dataset.noise` (in [0, 1] units), clipped and stored as uint8. The shifts and the noise make the
task hard enough that a small CNN needs several rounds to learn it, not one.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sim.data import Dataset

logger = logging.getLogger(__name__)

MAX_FREQUENCY = 2  # templates use spatial frequencies up to this many cycles per image side
AMPLITUDE = 0.10  # std of a template around mid-grey, in [0, 1] units
MAX_SHIFT = 0.25  # largest circular shift, as a fraction of the image side
CONTRAST = (0.6, 1.4)  # per-image contrast factor range
BRIGHTNESS = 0.08  # std of the per-image brightness offset


def params_from_cfg(cfg: Any, seed: int) -> dict[str, Any]:
    """Generator parameters from the `dataset` config node (ranges: sim.config.schema, checked by validate)."""
    params = {
        "num_train": int(cfg.num_train),
        "num_test": int(cfg.num_test),
        "num_classes": int(cfg.num_classes),
        "channels": int(cfg.channels),
        "image_size": int(cfg.image_size),
        "noise": float(cfg.noise),
        "seed": int(seed),
        "name": str(cfg.name),
    }
    return params


def generate(
    num_train: int,
    num_test: int,
    num_classes: int,
    channels: int,
    image_size: int,
    noise: float,
    seed: int,
    name: str = "synthetic",
) -> Dataset:
    """Generate train and test sets; the same arguments always give identical arrays."""
    rng = np.random.default_rng(seed)
    templates = _templates(rng, num_classes, channels, image_size)
    train = _sample(rng, templates, num_train, noise)
    test = _sample(rng, templates, num_test, noise)
    logger.debug("generated %d + %d synthetic images from seed %d", num_train, num_test, seed)
    return Dataset(
        train_images=train[0],
        train_labels=train[1],
        test_images=test[0],
        test_labels=test[1],
        classes=tuple(f"class_{k}" for k in range(num_classes)),
        name=name,
    )


def _templates(rng: np.random.Generator, classes: int, channels: int, size: int) -> np.ndarray:
    """(classes, size, size, channels) float32 smooth periodic fields, std 1 each."""
    spectrum = np.zeros((classes, channels, size, size), dtype=np.complex128)
    freqs = [(fy, fx) for fy in range(-MAX_FREQUENCY, MAX_FREQUENCY + 1)
             for fx in range(-MAX_FREQUENCY, MAX_FREQUENCY + 1) if (fy, fx) != (0, 0)]
    for fy, fx in freqs:
        coef = rng.normal(size=(classes, channels)) + 1j * rng.normal(size=(classes, channels))
        spectrum[:, :, fy % size, fx % size] = coef / np.hypot(fy, fx)
    fields = np.fft.ifft2(spectrum).real
    fields -= fields.mean(axis=(2, 3), keepdims=True)
    fields /= fields.std(axis=(1, 2, 3), keepdims=True)
    return np.ascontiguousarray(fields.transpose(0, 2, 3, 1), dtype=np.float32)


def _sample(
    rng: np.random.Generator, templates: np.ndarray, n: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """`n` noisy, shifted images (uint8) with balanced, shuffled labels (int64)."""
    classes, size, _, channels = templates.shape
    labels = rng.permutation(np.arange(n) % classes).astype(np.int64)
    reach = max(1, int(size * MAX_SHIFT))
    dy, dx = rng.integers(-reach, reach + 1, size=(2, n))
    rows = (np.arange(size)[None, :] - dy[:, None]) % size
    cols = (np.arange(size)[None, :] - dx[:, None]) % size
    images = templates[labels[:, None, None], rows[:, :, None], cols[:, None, :]]
    contrast = rng.uniform(*CONTRAST, size=(n, 1, 1, 1)).astype(np.float32)
    brightness = rng.normal(0.0, BRIGHTNESS, size=(n, 1, 1, 1)).astype(np.float32)
    images *= contrast * AMPLITUDE
    images += 0.5 + brightness
    images += noise * rng.standard_normal(images.shape, dtype=np.float32)
    np.clip(images, 0.0, 1.0, out=images)
    return np.rint(images * 255.0).astype(np.uint8), labels
