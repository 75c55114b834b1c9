"""preview.png: what the latents look like, read back from the written files.

Rows: the patients with the lowest and highest necrosis fraction (T1, T2 and mask through the
tumour's largest slice) and with the fewest and most mitosis-like figures per mm^2 (slide
thumbnail and one 256-pixel level-0 tile through OpenSlide).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk


def _largest_slice(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, T2 and mask (y, x) through the mask's largest slice, all resampled onto the mask grid."""
    mask = sitk.ReadImage(str(folder / "mask.nii.gz"))
    planes = []
    for name in ("t1", "t2"):
        image = sitk.Resample(sitk.ReadImage(str(folder / f"{name}.nii.gz")), mask, sitk.Transform(), sitk.sitkLinear)
        planes.append(sitk.GetArrayFromImage(image))
    labels = sitk.GetArrayFromImage(mask)
    z = int(labels.sum(axis=(1, 2)).argmax())
    return planes[0][z], planes[1][z], labels[z]


def _tile(path: Path, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Slide thumbnail and the level-0 tile at the slide's centre."""
    import openslide

    with openslide.OpenSlide(path) as slide:
        width, height = slide.dimensions
        thumbnail = np.asarray(slide.get_thumbnail((256, 256)).convert("RGB"))
        tile = np.asarray(slide.read_region(((width - size) // 2, (height - size) // 2), 0, (size, size)).convert("RGB"))
    return thumbnail, tile


def write_preview(out: Path, truth: pd.DataFrame) -> Path:
    """Write `out`/preview.png from the cohort's files and ground truth; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mri = truth[truth["has_mri"]].sort_values("necrosis_fraction")
    wsi = truth[truth["has_wsi"]].sort_values("mitoses_per_mm2")
    fig, axes = plt.subplots(4, 3, figsize=(9, 12))
    for row, patient in zip(axes[:2], [mri.iloc[0], mri.iloc[-1]]):
        t1, t2, mask = _largest_slice(out / patient.centre / "mri" / patient.patient_id)
        for ax, image, title in zip(row, (t1, t2, mask), ("T1 post-contrast", "T2 fat-sat", "mask")):
            ax.imshow(image, cmap="gray")
            ax.set_title(f"{patient.patient_id} {title}", fontsize=8)
        row[0].set_ylabel(f"necrosis fraction {patient.necrosis_fraction:.2f}")
    for row, patient in zip(axes[2:], [wsi.iloc[0], wsi.iloc[-1]]):
        thumbnail, tile = _tile(out / patient.centre / "wsi" / f"{patient.patient_id}.tiff")
        row[0].imshow(thumbnail)
        row[0].set_title(f"{patient.patient_id} slide", fontsize=8)
        row[1].imshow(tile)
        row[1].set_title("256 px tile, level 0", fontsize=8)
        row[0].set_ylabel(f"{patient.mitoses_per_mm2:.0f} figures / mm2")
        row[2].axis("off")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = out / "preview.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
