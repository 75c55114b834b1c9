"""MRI preprocessing: T1 + T2 + mask -> one z-scored 2-channel tumour crop [2, D, H, W] float32,
and the tumour mask on the same grid [D, H, W] (for Grad-CAM overlays).

Steps (settings: preset.preprocessing.mri):
1. T2 and mask onto the T1 grid (linear / nearest neighbour) when their geometry differs; refuse
   when T2 does not overlap T1 in physical space or covers too little of the crop.
2. Crop box: the mask's bounding box on the T1 grid plus `margin_mm`, clipped to the image.
3. N4 bias-field correction per channel, fitted on the whole image shrunk by `shrink_factor`
   (the field is smooth, so this is much faster at the same result) and evaluated on the crop only.
4. Resize the crop to the preset's mri.input_size (as MMNN_STS does; the aspect ratio is not kept).
5. z-score each channel inside the crop (T2 voxels outside its field of view become 0).
The mask crop is resized like the channels (linear, then >= 0.5), so it lies on the model's grid.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from stsfl.client.mri.mri_io import MriPaths, read_image
from stsfl.client.problems import PatientDataError
from stsfl.common.config.preset import MriPreprocessingConfig, N4Config

INTERPOLATORS = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}


@dataclass
class MriResult:
    """volume [2, D, H, W] float32 (T1, T2); mask [D, H, W] uint8, the tumour on the volume's grid;
    seconds spent per step."""

    volume: np.ndarray
    mask: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    )


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical bounding box (lo, hi) of the image's voxel extent, in mm."""
    corners = [
        image.TransformContinuousIndexToPhysicalPoint([s - 0.5 if upper else -0.5 for s, upper in zip(image.GetSize(), pick)])
        for pick in itertools.product((False, True), repeat=3)
    ]
    pts = np.asarray(corners)
    return pts.min(axis=0), pts.max(axis=0)


def _overlap(a: sitk.Image, b: sitk.Image) -> bool:
    alo, ahi = physical_bounds(a)
    blo, bhi = physical_bounds(b)
    return bool(np.all(np.minimum(ahi, bhi) > np.maximum(alo, blo)))


def mask_crop_box(mask: np.ndarray, spacing_zyx: tuple[float, ...], margin_mm: float) -> tuple[slice, ...]:
    """Bounding box of a boolean [D, H, W] mask grown by margin_mm on each side, clipped to the image."""
    coords = np.nonzero(mask)
    box = []
    for axis, (idx, sp) in enumerate(zip(coords, spacing_zyx)):
        grow = int(math.ceil(margin_mm / sp))
        box.append(slice(max(int(idx.min()) - grow, 0), min(int(idx.max()) + 1 + grow, mask.shape[axis])))
    return tuple(box)


def _region(box: tuple[slice, ...]) -> tuple[list[int], list[int]]:
    """SimpleITK (index, size) in x, y, z order of a numpy z, y, x box."""
    return [int(s.start) for s in reversed(box)], [int(s.stop - s.start) for s in reversed(box)]


def n4_corrected_crop(image: sitk.Image, fit_mask: sitk.Image, box: tuple[slice, ...], cfg: N4Config) -> sitk.Image:
    """Fit N4 on the shrunk whole image (inside fit_mask), return the corrected crop `box` at full resolution."""
    low = float(sitk.GetArrayViewFromImage(image).min())
    positive = image - low + 1.0  # N4 works on log intensities: keep them positive
    # per axis, keeping >= 8 voxels: thick-slice axes are shrunk less than the in-plane ones
    shrink = [max(1, min(cfg.shrink_factor, size // 8)) for size in image.GetSize()]
    small = sitk.Shrink(positive, shrink)
    small_mask = sitk.Shrink(fit_mask, shrink)
    if not sitk.GetArrayViewFromImage(small_mask).any():
        small_mask = small_mask + 1
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(cfg.iterations))
    corrector.Execute(small, small_mask)
    index, size = _region(box)
    crop = sitk.RegionOfInterest(positive, size, index)
    return crop / sitk.Exp(corrector.GetLogBiasFieldAsImage(crop))


def resize(image: sitk.Image, size_dhw: tuple[int, int, int], interpolator: int) -> sitk.Image:
    """Resample `image` onto a grid of size_dhw voxels covering the same physical extent."""
    out_size = [int(s) for s in reversed(size_dhw)]
    in_size, in_spacing = image.GetSize(), image.GetSpacing()
    spacing = [sz * sp / o for sz, sp, o in zip(in_size, in_spacing, out_size)]
    # Keep the outer voxel edges in place: shift the first centre by half the change of spacing.
    shift = [(new - old) / 2 for new, old in zip(spacing, in_spacing)]
    origin = image.TransformContinuousIndexToPhysicalPoint([s / sp for s, sp in zip(shift, in_spacing)])
    return sitk.Resample(
        image, out_size, sitk.Transform(), interpolator, origin, spacing, image.GetDirection(), 0.0, sitk.sitkFloat32
    )


def _zscore(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    values = x[valid]
    if values.size == 0:
        return np.zeros_like(x)
    std = float(values.std())
    out = (x - float(values.mean())) / (std if std > 1e-6 else 1.0)
    return np.where(valid, out, 0.0).astype(np.float32)


def preprocess_mri(paths: MriPaths, cfg: MriPreprocessingConfig, size_dhw: tuple[int, int, int]) -> MriResult:
    """Read, align, N4-correct, crop, resize and normalise one patient's MRI -> [2, D, H, W]."""
    seconds: dict[str, float] = defaultdict(float)
    tick = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        seconds[step] += now - tick
        tick = now

    t1 = sitk.Cast(read_image(paths.t1), sitk.sitkFloat32)
    t2 = sitk.Cast(read_image(paths.t2), sitk.sitkFloat32)
    mask = read_image(paths.mask)
    lap("read")

    if not sitk.GetArrayViewFromImage(mask).any():
        raise PatientDataError("mask is empty (no voxel > 0)", str(paths.mask))
    if not _overlap(t1, t2):
        raise PatientDataError("T2 does not overlap T1 in physical space: cannot be aligned", str(paths.t2))
    if not _same_grid(t1, t2):
        t2 = sitk.Resample(t2, t1, sitk.Transform(), sitk.sitkLinear, math.nan, sitk.sitkFloat32)
    if not _same_grid(t1, mask):
        mask = sitk.Resample(mask, t1, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    mask_arr = sitk.GetArrayViewFromImage(mask) > 0
    if not mask_arr.any():
        raise PatientDataError("mask lies outside the T1 image (empty once on the T1 grid)", str(paths.mask))
    box = mask_crop_box(mask_arr, tuple(reversed(t1.GetSpacing())), cfg.margin_mm)
    t2_arr = sitk.GetArrayFromImage(t2)
    covered = np.isfinite(t2_arr)
    coverage = float(covered[box].mean())
    if coverage < cfg.min_t2_coverage:
        raise PatientDataError(
            f"T2 covers only {coverage:.0%} of the tumour crop on the T1 grid (< {cfg.min_t2_coverage:.0%}): cannot be aligned",
            str(paths.t2),
        )
    t2_filled = sitk.GetImageFromArray(np.where(covered, t2_arr, 0.0).astype(np.float32))
    t2_filled.CopyInformation(t1)
    covered_img = sitk.GetImageFromArray(covered.astype(np.uint8))
    covered_img.CopyInformation(t1)
    lap("align")

    index, size = _region(box)
    channels = []
    for image, valid in ((t1, None), (t2_filled, covered_img)):
        if cfg.n4.enabled:
            fit_mask = sitk.OtsuThreshold(image, 0, 1, 128)
            if valid is not None:
                fit_mask = fit_mask * valid
            crop = n4_corrected_crop(image, fit_mask, box, cfg.n4)
            lap("n4")
        else:
            crop = sitk.RegionOfInterest(image, size, index)
        channels.append(resize(crop, size_dhw, INTERPOLATORS[cfg.interpolation]))
    valid_crop = resize(sitk.Cast(sitk.RegionOfInterest(covered_img, size, index), sitk.sitkFloat32), size_dhw, sitk.sitkLinear)
    mask_crop = resize(sitk.Cast(sitk.RegionOfInterest(mask > 0, size, index), sitk.sitkFloat32), size_dhw, sitk.sitkLinear)
    lap("resize")

    t2_valid = sitk.GetArrayViewFromImage(valid_crop) > 0.5
    t1_arr = sitk.GetArrayFromImage(channels[0])
    volume = np.stack([_zscore(t1_arr, np.ones_like(t2_valid)), _zscore(sitk.GetArrayFromImage(channels[1]), t2_valid)])
    lap("normalise")
    tumour = (sitk.GetArrayViewFromImage(mask_crop) >= 0.5).astype(np.uint8)
    return MriResult(volume.astype(np.float32), tumour, dict(seconds))
