"""A tumour in world coordinates (mm): lobulated ellipsoid, necrotic core, textured viable tissue, oedema.

The tumour's internal fields live on a small cube in its own normalised frame (semi-axes = 1),
so the necrotic share of the volume is exactly the latent `necrosis_fraction` whatever the
tumour's size, and any image grid (T1, T2, mask, a resampled crop) can sample the same tumour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from stsfl.client.lab.synthetic.noise import smooth_noise

# Tissue labels returned by Tumour.sample.
OUTSIDE, VIABLE, NECROSIS, OEDEMA = 0, 1, 2, 3

LOBULATION = 0.12  # boundary radius = 1 + LOBULATION * smooth noise (normalised units)
HALF_EXTENT = 1.9  # the field cube spans [-HALF_EXTENT, HALF_EXTENT]^3: tumour + widest oedema


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Random orientation with the long axis near the limb axis (world z): spin about z, tilt ~15 degrees."""
    phi, tilt = rng.uniform(0, 2 * np.pi), rng.normal(0, np.deg2rad(15))
    cz, sz, cx, sx = np.cos(phi), np.sin(phi), np.cos(tilt), np.sin(tilt)
    spin = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    lean = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return spin @ lean


@dataclass(frozen=True)
class Tumour:
    """Fields on an (N, N, N) cube over the normalised frame u = R^T (p - centre) / semi_axes.

    fields[0]: boundary radius, fields[1]: necrosis score (> 0 necrotic), fields[2]: oedema
    radius, fields[3]: texture of viable tissue (mean 0, std 1; the same cells on T1 and T2).
    """

    centre: np.ndarray  # (3,) mm, world
    rotation: np.ndarray  # (3, 3), columns = the tumour's axes in world coordinates
    semi_axes: np.ndarray  # (3,) mm
    fields: np.ndarray  # (4, N, N, N) float32
    oedema: float  # mean oedema shell thickness in units of the semi-axes

    def world_half_extent(self) -> np.ndarray:
        """(3,) mm: half-size along world axes of the box holding tumour and oedema."""
        reach = self.semi_axes * (1 + 2 * LOBULATION + self.oedema)
        return np.abs(self.rotation) @ reach

    def sample(self, points: np.ndarray, texture: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (M,) uint8 at world points (M, 3) mm and, if `texture`, the viable-tissue texture
        (M,) float32 (zero outside viable tissue; None otherwise)."""
        u = (points - self.centre.astype(np.float32)) @ (self.rotation / self.semi_axes).astype(np.float32)
        labels = np.zeros(len(points), dtype=np.uint8)
        values = np.zeros(len(points), dtype=np.float32) if texture else None
        rho = np.sqrt(np.einsum("ij,ij->i", u, u))
        near = np.flatnonzero(rho < HALF_EXTENT)
        if near.size == 0:
            return labels, values
        n = self.fields.shape[-1]
        index = ((u[near] + HALF_EXTENT) * ((n - 1) / (2 * HALF_EXTENT))).T

        def field(k: int, at: np.ndarray) -> np.ndarray:
            return ndimage.map_coordinates(self.fields[k], index[:, at], order=1, mode="nearest")

        everywhere = np.arange(near.size)
        labels[near[rho[near] < field(2, everywhere)]] = OEDEMA
        inside = np.flatnonzero(rho[near] < field(0, everywhere))
        necrotic = field(1, inside) > 0
        labels[near[inside]] = np.where(necrotic, NECROSIS, VIABLE)
        if values is not None:
            viable = inside[~necrotic]
            values[near[viable]] = field(3, viable)
        return labels, values


def draw_semi_axes(rng: np.random.Generator, size_cm: float) -> np.ndarray:
    """(3,) mm: an ellipsoid whose largest diameter is `size_cm`, longest along its own z."""
    longest = size_cm * 10 / 2
    return np.array([longest * rng.uniform(0.55, 0.95), longest * rng.uniform(0.5, 0.9), longest])


def ellipsoid_volume_cm3(semi_axes: np.ndarray) -> float:
    """The clinical volume estimate (4/3 pi a b c), as radiologists report it from three diameters."""
    return float(4 / 3 * np.pi * np.prod(semi_axes)) / 1000


def draw_tumour(
    rng: np.random.Generator,
    semi_axes: np.ndarray,
    necrosis_fraction: float,
    oedema: float,
    centre: np.ndarray,
    grid: int,
) -> Tumour:
    """A tumour of `semi_axes` (mm), necrotic share `necrosis_fraction` (0-1), fields on a `grid`^3 cube."""
    axis = np.linspace(-HALF_EXTENT, HALF_EXTENT, grid, dtype=np.float32)
    rho = np.sqrt(sum(c**2 for c in np.meshgrid(axis, axis, axis, indexing="ij")))

    boundary = 1 + LOBULATION * smooth_noise(rng, rho.shape, grid / 10)
    inside = rho < boundary
    # Necrosis grows from the centre in blobs: smooth noise minus a radial term, thresholded so
    # that exactly `necrosis_fraction` of the tumour's volume is necrotic.
    score = smooth_noise(rng, rho.shape, grid / 12) - 1.5 * rho
    threshold = np.quantile(score[inside], 1 - necrosis_fraction) if necrosis_fraction > 0 else score.max() + 1
    oedema_radius = boundary + oedema * np.clip(1 + 0.4 * smooth_noise(rng, rho.shape, grid / 8), 0, None)
    texture = smooth_noise(rng, rho.shape, 1.5)
    fields = np.stack([boundary, score - threshold, oedema_radius, texture]).astype(np.float32)
    return Tumour(
        centre=np.asarray(centre, dtype=float),
        rotation=_rotation(rng),
        semi_axes=semi_axes,
        fields=fields,
        oedema=oedema,
    )
