"""Smooth random fields: the raw material of texture, lobulation, bias fields and tissue shapes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise of `shape`, correlation length ~`sigma` pixels, mean 0, std 1 (float32).

    Wide kernels are costly, so a field with sigma > 4 is drawn on a grid `sigma / 2` times
    coarser and upsampled (cubic), which gives the same kind of field at a fraction of the cost.
    """
    factor = max(1.0, sigma / 2.0)
    coarse_shape = tuple(max(4, int(np.ceil(n / factor)) + 2) for n in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse_shape, dtype=np.float32), sigma / factor, mode="wrap")
    if factor > 1.0:
        # The coarse grid has 2 cells to spare on each axis, so the zoomed field always covers `shape`.
        field = ndimage.zoom(field, factor, order=3, grid_mode=True, mode="grid-wrap")
    field = field[tuple(slice(0, n) for n in shape)]
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)
