"""An H&E-like slide of the resection specimen with mitosis-like figures at a latent density.

Colours follow the Beer-Lambert stain model (Ruifrok & Johnston 2001): optical density
OD = hematoxylin * h + eosin * e, RGB = 255 * exp(-OD). A centre's stain shift rotates the
h and e vectors about the grey axis (hue) and scales their density (intensity). Nuclei are
mid-dark ovals at a few thousand per mm^2; mitosis-like figures are small, near-black clumps
whose density per mm^2 of tissue is the patient's latent WSI property, so a 256-pixel tile at
0.5 microns per pixel (128 microns) holds on average from under one to several of them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from stsfl.client.lab.synthetic.config import CentreProfile, WsiSettings
from stsfl.client.lab.synthetic.noise import smooth_noise

HEMATOXYLIN = np.array([0.650, 0.704, 0.286])
EOSIN = np.array([0.072, 0.990, 0.105])
NUCLEI_PER_MM2 = 6000.0
NUCLEUS_OD, MITOSIS_OD = 0.8, 2.4
CELL = 16  # pixels per cell of the coarse maps


def _rotate_about_grey(vector: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues rotation of an OD vector about (1, 1, 1): a hue shift that keeps it a stain."""
    axis = np.ones(3) / np.sqrt(3)
    theta = np.deg2rad(degrees)
    rotated = vector * np.cos(theta) + np.cross(axis, vector) * np.sin(theta) + axis * (axis @ vector) * (1 - np.cos(theta))
    return np.abs(rotated) / np.linalg.norm(rotated)


def stain_vectors(rng: np.random.Generator, profile: CentreProfile) -> tuple[np.ndarray, np.ndarray]:
    """This slide's (h, e) OD vectors: the centre's shift plus a little per-slide variation."""
    scale = profile.stain_intensity * rng.normal(1.0, 0.04)
    h = _rotate_about_grey(HEMATOXYLIN, profile.stain_shift_deg + rng.normal(0, 2)) * scale
    e = _rotate_about_grey(EOSIN, profile.stain_shift_deg + rng.normal(0, 2)) * scale
    return h, e


def _stamp(shape: tuple[int, int], centres: np.ndarray, sigma: float) -> np.ndarray:
    """Sum of Gaussian blobs at pixel `centres` (K, 2) rows/cols, each scaled to peak ~1 (float32)."""
    impulses = np.zeros(shape, dtype=np.float32)
    rows, cols = np.clip(np.rint(centres).astype(int), 0, np.array(shape) - 1).T
    np.add.at(impulses, (rows, cols), 2 * np.pi * sigma**2)
    return ndimage.gaussian_filter(impulses, sigma)


def _scatter(rng: np.random.Generator, weight: np.ndarray, cell: int, count: int) -> np.ndarray:
    """`count` points (K, 2) in pixels, denser where the coarse `weight` map (one value per `cell`^2 pixels) is high."""
    flat = weight.ravel().astype(np.float64)
    picks = rng.choice(flat.size, size=count, p=flat / flat.sum())
    corners = np.stack(np.unravel_index(picks, weight.shape), axis=1) * cell
    return corners + rng.uniform(0, cell, (count, 2))


def _upsample(coarse: np.ndarray, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Bilinear upsampling of a coarse map by `cell`, cropped to `shape` (float32)."""
    return ndimage.zoom(coarse, cell, order=1, grid_mode=True, mode="nearest")[: shape[0], : shape[1]]


def render_slide(
    rng: np.random.Generator, settings: WsiSettings, profile: CentreProfile, mitoses_per_mm2: float
) -> tuple[np.ndarray, float]:
    """Level-0 RGB slide (height, width, 3) uint8 and its tissue area in mm^2.

    Smooth maps (tissue outline, cellularity) are drawn on a grid of CELL-pixel cells and
    upsampled; nuclei and figures are stamped at full resolution.
    """
    shape = (settings.height, settings.width)
    coarse = (-(-shape[0] // CELL), -(-shape[1] // CELL))
    rows, cols = np.ogrid[: coarse[0], : coarse[1]]
    # Tissue: a smooth blob, denser towards the middle, with soft edges.
    centred = ((rows / coarse[0] - 0.5) ** 2 + (cols / coarse[1] - 0.5) ** 2) * 4
    blob = smooth_noise(rng, coarse, min(coarse) / 6) - 2.5 * centred
    tissue_coarse = np.clip((blob - np.quantile(blob, 0.4)) * 4, 0, 1).astype(np.float32)
    tissue = np.clip(_upsample(tissue_coarse, shape, CELL), 0, 1)
    area_mm2 = float(tissue.sum()) * (settings.mpp / 1000) ** 2

    cellularity = tissue_coarse * np.clip(1 + 0.4 * smooth_noise(rng, coarse, 4), 0.2, None)
    n_nuclei = rng.poisson(NUCLEI_PER_MM2 * area_mm2)
    centres = _scatter(rng, cellularity, CELL, n_nuclei)
    # Oval nuclei: two blobs a few pixels apart in a random direction.
    angle = rng.uniform(0, np.pi, n_nuclei)
    offset = np.stack([np.sin(angle), np.cos(angle)], axis=1) * rng.uniform(1.5, 4, (n_nuclei, 1))
    nuclei = _stamp(shape, np.concatenate([centres - offset, centres + offset]), 2.2)
    hema = NUCLEUS_OD * np.clip(nuclei * 1.6, 0, 1)

    # Mitosis-like figures: 5 tight sub-blobs, much darker than any nucleus.
    n_mitoses = rng.poisson(mitoses_per_mm2 * area_mm2)
    if n_mitoses:
        figures = _scatter(rng, tissue_coarse, CELL, n_mitoses)
        parts = np.repeat(figures, 5, axis=0) + rng.normal(0, 2.0, (5 * n_mitoses, 2))
        hema = np.maximum(hema, MITOSIS_OD * np.clip(_stamp(shape, parts, 1.4) * 1.2, 0, 1))

    # Collagen-like streaks: noise smoothed more along rows than columns.
    fibres = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (1.5, 5.0))
    eosin = tissue * (0.35 + (0.1 / fibres.std()) * fibres) * (1 - 0.5 * np.clip(hema, 0, 1))
    hema += 0.06 * tissue
    h, e = stain_vectors(rng, profile)
    od = hema[..., None] * h.astype(np.float32) + np.clip(eosin, 0.02, None)[..., None] * e.astype(np.float32)
    return np.rint(255 * np.exp(-od - 0.02)).astype(np.uint8), area_mm2
