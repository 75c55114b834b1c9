"""Per-tile nuclear morphometry: hand-made features that carry morphology without pretrained weights.

Colour deconvolution (Ruifrok & Johnston 2001, scikit-image `rgb2hed`) gives each pixel's
haematoxylin optical density. Nuclei are the connected regions above the tile's own Otsu threshold
of that density (so a centre's stain intensity moves the threshold with it); hyperchromatic figures
(mitosis-like clumps, much darker than a nucleus) are the regions above DARK_RATIO times the tile's
median nuclear density. Per tile: densities per mm^2 and sizes in um^2 (as log1p, so that every
feature is of order 1), shape and intensity statistics,
MORPHOMETRY_FEATURES numbers in the fixed order of FEATURE_NAMES. Deterministic: no learned or
random part, so every site computes the same numbers for the same tile.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu

# rgb2hed divides optical density by -ln(1e-6); multiplying back gives OD units (Beer-Lambert).
_OD_SCALE = -np.log(1e-6)
BACKGROUND_OD = 0.3  # summed RGB optical density below this is glass (a light grey of 230 is 0.31)
MIN_NUCLEUS_UM2 = 4.0  # smaller regions are noise, not nuclei
DARK_RATIO = 2.0  # a hyperchromatic figure is at least twice as dark as the tile's median nucleus
FEATURE_NAMES = (
    "tissue_fraction",
    "nuclear_area_fraction",
    "log_nuclei_per_mm2",
    "log_nucleus_area_um2_mean",
    "log_nucleus_area_um2_sd",
    "nucleus_eccentricity_mean",
    "nucleus_eccentricity_sd",
    "nucleus_h_od_mean",
    "nucleus_h_od_sd",
    "h_od_p50",
    "h_od_p90",
    "h_od_p99",
    "e_od_mean",
    "log_dark_figures_per_mm2",
    "dark_area_fraction",
    "log_dark_figure_area_um2_mean",
)
MORPHOMETRY_FEATURES = len(FEATURE_NAMES)


def _regions(mask: np.ndarray, min_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected regions of mask with at least min_px pixels: (labels [T, T] with small regions
    zeroed, areas [R] in px, eccentricities [R]); second moments by bincount, no per-region loop."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return labels, np.zeros(0), np.zeros(0)
    rows, cols = np.nonzero(labels)
    ids = labels[rows, cols]
    area = np.bincount(ids, minlength=n + 1)[1:].astype(np.float64)
    sums = [np.bincount(ids, weights=w, minlength=n + 1)[1:] for w in (rows, cols, rows * rows, cols * cols, rows * cols)]
    mr, mc = sums[0] / area, sums[1] / area
    vr, vc, cov = sums[2] / area - mr**2 + 1 / 12, sums[3] / area - mc**2 + 1 / 12, sums[4] / area - mr * mc
    spread = np.sqrt(((vr - vc) / 2) ** 2 + cov**2)
    major, minor = (vr + vc) / 2 + spread, np.maximum((vr + vc) / 2 - spread, 0.0)
    eccentricity = np.sqrt(1 - minor / np.maximum(major, 1e-12))
    keep = area >= min_px
    labels = np.where(np.concatenate([[False], keep])[labels], labels, 0)
    return labels, area[keep], eccentricity[keep]


def tile_morphometry(tile: np.ndarray, mpp: float) -> np.ndarray:
    """One RGB tile [T, T, 3] uint8 at `mpp` microns per pixel -> features [MORPHOMETRY_FEATURES] float32."""
    hed = rgb2hed(tile) * _OD_SCALE
    h_od, e_od = hed[..., 0], hed[..., 1]
    total_od = -np.log(np.maximum(tile.astype(np.float64), 1.0) / 255.0).sum(axis=-1)
    tissue = total_od > BACKGROUND_OD
    px_um2 = mpp * mpp
    tissue_mm2 = max(tissue.sum() * px_um2 / 1e6, 1e-6)
    features = dict.fromkeys(FEATURE_NAMES, 0.0)
    features["tissue_fraction"] = float(tissue.mean())
    if tissue.sum() < 16:
        return np.array([features[name] for name in FEATURE_NAMES], dtype=np.float32)
    h_tissue = h_od[tissue]
    features["h_od_p50"], features["h_od_p90"], features["h_od_p99"] = np.percentile(h_tissue, [50, 90, 99])
    features["e_od_mean"] = float(e_od[tissue].mean())
    threshold = threshold_otsu(h_tissue) if np.ptp(h_tissue) > 0 else np.inf
    nuclear = tissue & (h_od > threshold)
    labels, areas, eccentricity = _regions(nuclear, MIN_NUCLEUS_UM2 / px_um2)
    nuclear = labels > 0
    features["nuclear_area_fraction"] = float(nuclear.sum() / tissue.sum())
    if len(areas):
        areas_um2 = areas * px_um2
        features["log_nuclei_per_mm2"] = float(np.log1p(len(areas) / tissue_mm2))
        features["log_nucleus_area_um2_mean"] = float(np.log1p(areas_um2.mean()))
        features["log_nucleus_area_um2_sd"] = float(np.log1p(areas_um2.std()))
        features["nucleus_eccentricity_mean"] = float(eccentricity.mean())
        features["nucleus_eccentricity_sd"] = float(eccentricity.std())
        features["nucleus_h_od_mean"] = float(h_od[nuclear].mean())
        features["nucleus_h_od_sd"] = float(h_od[nuclear].std())
        dark = nuclear & (h_od > DARK_RATIO * np.median(h_od[nuclear]))
        _, dark_areas, _ = _regions(dark, 1)
        features["log_dark_figures_per_mm2"] = float(np.log1p(len(dark_areas) / tissue_mm2))
        features["dark_area_fraction"] = float(dark.sum() / tissue.sum())
        if len(dark_areas):
            features["log_dark_figure_area_um2_mean"] = float(np.log1p(dark_areas.mean() * px_um2))
    return np.array([features[name] for name in FEATURE_NAMES], dtype=np.float32)


def morphometry(tiles: np.ndarray, mpp: float) -> np.ndarray:
    """Tiles [n, T, T, 3] uint8 -> features [n, MORPHOMETRY_FEATURES] float32."""
    return (
        np.stack([tile_morphometry(tile, mpp) for tile in tiles])
        if len(tiles)
        else np.zeros((0, MORPHOMETRY_FEATURES), np.float32)
    )
