"""T1 post-contrast and T2 fat-sat volumes and the tumour mask, sampled from one world-space phantom.

A limb (skin-to-fascia fat, muscle, bone with marrow) holds the tumour of tumour.py. Each image
samples the phantom at its own voxel centres, so T1, T2 and mask may have different grids
(spacing, size, origin, direction) and still agree in world coordinates, as real acquisitions do.
The scanner adds an intensity scale, a smooth multiplicative bias field and Rician noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from stsfl.client.lab.synthetic.config import CentreProfile, MriGrid
from stsfl.client.lab.synthetic.tumour import NECROSIS, OEDEMA, VIABLE, Tumour

# Signal (arbitrary units) of each tissue on (T1 post-contrast, T2 fat-sat). Viable tumour enhances
# on T1; necrosis does not (dark on T1) and holds fluid (bright on T2); oedema is bright on T2 only.
# Scanner units are arbitrary; a muscle level of ~100 keeps int16 files small after noise.
SIGNAL = {
    "air": (0.0, 0.0),
    "fat": (82.0, 22.0),
    "muscle": (100.0, 50.0),
    "cortex": (10.0, 8.0),
    "marrow": (88.0, 20.0),
    VIABLE: (238.0, 175.0),
    NECROSIS: (55.0, 288.0),
    OEDEMA: (118.0, 155.0),
}
TEXTURE = 0.12  # relative amplitude of viable-tissue heterogeneity
FOV_MARGIN = 1.15
MAX_EXTRA_SLICES = 1.5  # field of view / extent of tumour + oedema, when the tumour sets the FOV


@dataclass(frozen=True)
class Geometry:
    """An image grid; world point of voxel index i (x, y, z) = origin + direction @ (i * spacing)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 3x3 row-major, as SimpleITK

    def points(self) -> np.ndarray:
        """(z * y * x, 3) float32 world coordinates of the voxel centres, in numpy (z, y, x) order."""
        direction = np.asarray(self.direction, dtype=np.float32).reshape(3, 3)
        axes = [np.arange(n, dtype=np.float32) * s for n, s in zip(self.size, self.spacing)]
        shape = self.size[::-1]
        coords = np.empty((*shape, 3), dtype=np.float32)
        for k in range(3):
            coords[..., k] = (
                self.origin[k]
                + direction[k, 0] * axes[0][None, None, :]
                + direction[k, 1] * axes[1][None, :, None]
                + direction[k, 2] * axes[2][:, None, None]
            )
        return coords.reshape(-1, 3)


@dataclass(frozen=True)
class Limb:
    """An elliptic limb along world z: centre and radii (mm) in x-y, fat thickness, bone."""

    centre: np.ndarray
    radii: np.ndarray
    fat_mm: float
    bone_centre: np.ndarray
    bone_radius: float


def draw_limb(rng: np.random.Generator, tumour: Tumour, deep: bool) -> Limb:
    """A limb that holds the tumour in muscle (deep) or in the subcutaneous fat (superficial)."""
    reach = float(np.max(tumour.world_half_extent()[:2]))
    radius = max(rng.uniform(60, 90), reach + 20)
    radii = radius * np.array([1.0, rng.uniform(0.8, 1.0)])
    fat = rng.uniform(8, 20)
    angle = rng.uniform(0, 2 * np.pi)
    outward = np.array([np.cos(angle), np.sin(angle)])
    depth = max(0.0, radii.min() - fat - 0.8 * reach - 8) if deep else radii.min() - fat / 2
    centre = tumour.centre[:2] - outward * depth
    return Limb(centre, radii, fat, centre - outward * 0.2 * radius, rng.uniform(11, 15))


def acquisition_geometry(rng: np.random.Generator, grid: MriGrid, tumour: Tumour, oblique_deg: float) -> Geometry:
    """The scan of one patient on `grid`, centred near the tumour.

    As at a scanner, a tumour that would not fit gets a wider in-plane field of view (larger
    pixels, same matrix) and more slices (up to MAX_EXTRA_SLICES times as many, then thicker).
    """
    need = 2 * tumour.world_half_extent() * FOV_MARGIN
    nominal = np.asarray(grid.spacing, dtype=float)
    size = np.asarray(grid.size)
    spacing = nominal.copy()
    spacing[:2] = np.maximum(nominal[:2], need[:2].max() / size[:2])
    size[2] = min(max(size[2], int(np.ceil(need[2] / nominal[2]))), int(MAX_EXTRA_SLICES * size[2]))
    spacing[2] = max(nominal[2], need[2] / size[2])
    angle = np.deg2rad(oblique_deg + rng.normal(0, 2))
    c, s = np.cos(angle), np.sin(angle)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    spacing = np.round(spacing, 4)
    fov_centre = tumour.centre + rng.uniform(-0.08, 0.08, 3) * spacing * size
    origin = fov_centre - direction @ ((size - 1) / 2 * spacing)
    return Geometry(
        size=tuple(int(n) for n in size),
        spacing=tuple(float(v) for v in spacing),
        origin=tuple(round(float(v), 3) for v in origin),
        direction=tuple(float(v) for v in direction.ravel()),
    )


def _tissue_signal(points: np.ndarray, limb: Limb, contrast: int) -> np.ndarray:
    """(M,) signal of the limb's normal tissues at world points (M, 3)."""
    radial = np.linalg.norm((points[:, :2] - limb.centre) / limb.radii, axis=1)
    bone = np.linalg.norm(points[:, :2] - limb.bone_centre, axis=1)
    signal = np.full(len(points), SIGNAL["muscle"][contrast], dtype=np.float32)
    signal[radial > 1 - limb.fat_mm / limb.radii.mean()] = SIGNAL["fat"][contrast]
    signal[bone < limb.bone_radius] = SIGNAL["cortex"][contrast]
    signal[bone < limb.bone_radius - 4] = SIGNAL["marrow"][contrast]
    signal[radial > 1] = SIGNAL["air"][contrast]
    return signal


def _bias_field(rng: np.random.Generator, points: np.ndarray, geometry: Geometry, strength: float) -> np.ndarray:
    """(M,) smooth multiplicative bias: exp of a random quadratic over the field of view."""
    extent = np.asarray(geometry.spacing, dtype=np.float32) * np.asarray(geometry.size) / 2
    x, y, z = ((points - points.mean(axis=0)) / extent).T
    coefficients = rng.normal(0, 0.5, 6).astype(np.float32)
    log_bias = sum(c * t for c, t in zip(coefficients, (x, y, z, x * x, y * y, x * y)))
    return np.exp(strength * log_bias)


def render_contrast(
    rng: np.random.Generator,
    tumour: Tumour,
    limb: Limb,
    geometry: Geometry,
    contrast: str,
    profile: CentreProfile,
) -> tuple[np.ndarray, np.ndarray]:
    """T1 (`contrast="t1"`) or T2 volume on `geometry` as a scanner stores it, int16 (z, y, x),
    and the tissue labels of its voxels, uint8 (z, y, x) (see tumour.py)."""
    which = 0 if contrast == "t1" else 1
    scale = profile.t1_scale if which == 0 else profile.t2_scale
    points = geometry.points()
    signal = _tissue_signal(points, limb, which)
    labels, texture = tumour.sample(points, texture=True)
    for label in (OEDEMA, VIABLE, NECROSIS):
        signal[labels == label] = SIGNAL[label][which]
    signal *= 1 + TEXTURE * texture
    signal *= scale * _bias_field(rng, points, geometry, profile.bias_strength)
    sigma = profile.noise * SIGNAL["muscle"][which] * scale
    real = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    noisy = np.hypot(real, sigma * rng.standard_normal(signal.shape, dtype=np.float32))
    volume = np.clip(np.rint(noisy), 0, np.iinfo(np.int16).max).astype(np.int16)
    shape = geometry.size[::-1]
    return volume.reshape(shape), labels.reshape(shape)


def mask_from_labels(labels: np.ndarray) -> np.ndarray:
    """Tumour mask (viable + necrosis, not oedema): uint8 array of 0/1, same shape as `labels`."""
    return np.isin(labels, (VIABLE, NECROSIS)).astype(np.uint8)


def to_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of `array` (z, y, x) with the world geometry attached."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image
