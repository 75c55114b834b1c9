"""Reinhard stain normalisation: match a slide's CIELAB mean/std (over its tissue) to one fixed
reference, so every site's tiles look alike to the encoder. Pure numpy (sRGB D65)."""

from __future__ import annotations

import numpy as np

# Reference appearance shared by every site (a typical H&E: pink-purple on light background).
REFERENCE_LAB_MEAN = np.array([62.0, 28.0, -14.0])
REFERENCE_LAB_STD = np.array([16.0, 9.0, 7.0])

_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])
_EPS, _KAPPA = 216 / 24389, 24389 / 27


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] sRGB -> float [..., 3] CIELAB."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float [..., 3] CIELAB -> uint8 [..., 3] sRGB (clipped)."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA) * _WHITE
    linear = np.clip(xyz @ np.linalg.inv(_RGB_TO_XYZ).T, 0.0, 1.0)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.round(c * 255), 0, 255).astype(np.uint8)


def lab_statistics(rgb_pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std [3] of tissue pixels [P, 3] uint8 in CIELAB."""
    lab = rgb_to_lab(rgb_pixels.reshape(-1, 3))
    return lab.mean(axis=0), np.maximum(lab.std(axis=0), 1e-3)


def reinhard(tiles: np.ndarray, source_mean: np.ndarray, source_std: np.ndarray) -> np.ndarray:
    """Map tiles [..., 3] uint8 from the slide's LAB statistics to the shared reference."""
    lab = rgb_to_lab(tiles)
    lab = (lab - source_mean) / source_std * REFERENCE_LAB_STD + REFERENCE_LAB_MEAN
    return lab_to_rgb(lab)
