"""Whole-slide images through OpenSlide: tissue detection, a tile grid at a fixed magnification
(microns per pixel, not level index), deterministic tile sampling, tile reading."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
from PIL import Image

from stsfl.client.problems import PatientDataError
from stsfl.common.config.preset import WsiPreprocessingConfig

MPP_TOLERANCE = 1.1  # read at most 10 % coarser than asked (scanner calibrations differ slightly)


def open_slide(path: Path) -> openslide.OpenSlide:
    """Open a slide; any OpenSlide failure becomes a PatientDataError naming the file."""
    try:
        return openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, OSError, ValueError) as err:
        raise PatientDataError(f"OpenSlide cannot open the slide ({type(err).__name__}: {err})", str(path)) from None


def slide_mpp(slide: openslide.OpenSlide, path: Path) -> float:
    """Microns per pixel at level 0 (from openslide.mpp-x)."""
    value = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    try:
        mpp = float(value) if value is not None else None
    except ValueError:
        mpp = None
    if not mpp or mpp <= 0:
        raise PatientDataError(f"slide has no usable microns-per-pixel ({openslide.PROPERTY_NAME_MPP_X}={value!r})", str(path))
    return mpp


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (256 bins)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


@dataclass
class TissueMap:
    """Low-resolution view of the slide: rgb [h, w, 3] uint8, tissue [h, w] bool, and the
    level-0 pixels per map pixel."""

    rgb: np.ndarray
    tissue: np.ndarray
    downsample: float


def tissue_map(slide: openslide.OpenSlide, tile_level0_px: float, cfg: WsiPreprocessingConfig) -> TissueMap:
    """Otsu on saturation (floored at cfg.min_saturation) on the coarsest level that still gives
    each tile at least 8x8 map pixels."""
    downsamples = slide.level_downsamples
    fine_enough = [lv for lv, ds in enumerate(downsamples) if ds <= tile_level0_px / 8]
    level = fine_enough[-1] if fine_enough else 0
    w, h = slide.level_dimensions[level]
    rgba = np.asarray(slide.read_region((0, 0), level, (w, h)))
    rgb = rgba[..., :3]
    opaque = rgba[..., 3] > 0
    top = rgb.max(axis=-1).astype(np.float32)
    saturation = np.where(top > 0, (top - rgb.min(axis=-1)) / np.maximum(top, 1), 0.0)
    threshold = max(otsu_threshold(saturation[opaque]) if opaque.any() else 1.0, cfg.min_saturation)
    return TissueMap(rgb, (saturation > threshold) & opaque, float(downsamples[level]))


def tissue_tiles(tmap: TissueMap, level0_size: tuple[int, int], tile_level0_px: float, threshold: float) -> np.ndarray:
    """Level-0 (x, y) corners [N, 2] of the non-overlapping tiles whose tissue share >= threshold."""
    width, height = level0_size
    keep = []
    step = tile_level0_px / tmap.downsample
    for row in range(int(height // tile_level0_px)):
        for col in range(int(width // tile_level0_px)):
            y0, x0 = int(round(row * step)), int(round(col * step))
            patch = tmap.tissue[y0 : int(round(y0 + step)), x0 : int(round(x0 + step))]
            if patch.size and patch.mean() >= threshold:
                keep.append((int(round(col * tile_level0_px)), int(round(row * tile_level0_px))))
    return np.asarray(keep, dtype=np.int64).reshape(-1, 2)


def sample_tiles(coords: np.ndarray, max_tiles: int, seed: int) -> np.ndarray:
    """At most max_tiles of coords, chosen by a seeded generator, kept in reading order."""
    if len(coords) <= max_tiles:
        return coords
    pick = np.random.default_rng(seed).choice(len(coords), size=max_tiles, replace=False)
    return coords[np.sort(pick)]


@dataclass
class TileReader:
    """Reads tile_size x tile_size RGB tiles at `mpp` from the pyramid level just finer than it."""

    slide: openslide.OpenSlide
    level: int
    read_px: int
    tile_size: int

    @classmethod
    def for_slide(cls, slide: openslide.OpenSlide, path: Path, cfg: WsiPreprocessingConfig) -> TileReader:
        mpp0 = slide_mpp(slide, path)
        if mpp0 > cfg.mpp * MPP_TOLERANCE:
            raise PatientDataError(f"slide scanned at {mpp0:g} um/px, coarser than the configured {cfg.mpp:g} um/px", str(path))
        target_ds = cfg.mpp / mpp0
        level = slide.get_best_level_for_downsample(target_ds * 1.001)
        read_px = max(1, int(round(cfg.tile_size * target_ds / slide.level_downsamples[level])))
        return cls(slide, level, read_px, cfg.tile_size)

    def read(self, xy: tuple[int, int]) -> np.ndarray:
        """One tile [tile_size, tile_size, 3] uint8 with level-0 top-left corner xy."""
        region = self.slide.read_region((int(xy[0]), int(xy[1])), self.level, (self.read_px, self.read_px)).convert("RGB")
        if self.read_px != self.tile_size:
            region = region.resize((self.tile_size, self.tile_size), Image.BILINEAR)
        return np.asarray(region)

    def batches(self, coords: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        """Tiles in batches [b, T, T, 3] uint8, in coords order."""
        for start in range(0, len(coords), batch_size):
            yield np.stack([self.read(xy) for xy in coords[start : start + batch_size]])
