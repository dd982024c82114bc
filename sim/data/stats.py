"""Per-channel mean and standard deviation of uint8 images, in [0, 1] units.

Computed once, when a source is first decoded, and stored in the cache's `meta.json`
beside the arrays (`sim.data.cache`), so a data set normalises with its own statistics
without a pass over the images at every start.
"""

from __future__ import annotations

import numpy as np

CHUNK = 4096  # images per step: bounded memory for any data set size


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel of uint8 (N, H, W, C) `images`, each value rounded to 4 digits."""
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty (N, H, W, C) array, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    channels = images.shape[-1]
    counts = np.zeros((channels, 256), dtype=np.int64)  # a histogram per channel: exact integer sums
    for start in range(0, len(images), CHUNK):
        chunk = np.asarray(images[start : start + CHUNK]).reshape(-1, channels)
        for c in range(channels):
            counts[c] += np.bincount(chunk[:, c], minlength=256)
    levels = np.arange(256, dtype=np.float64)
    total, squares = counts @ levels, counts @ levels**2
    count = images.size // channels
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std = np.where(std > 0, std, 255.0)  # a constant channel: leave it unscaled rather than divide by 0
    return tuple(round(float(v) / 255.0, 4) for v in mean), tuple(round(float(v) / 255.0, 4) for v in std)
