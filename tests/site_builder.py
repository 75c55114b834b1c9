"""Writes tiny real site folders for tests: NIfTI / NRRD / DICOM volumes through SimpleITK,
pyramidal TIFF slides through tifffile (read back by OpenSlide), a clinical.csv and a site YAML."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import tifffile
import yaml

SIZE = (16, 20, 20)  # D, H, W


def phantom(seed: int, size=SIZE) -> dict[str, np.ndarray]:
    """T1, T2 (with a smooth bias field) and a spherical tumour mask, arrays [D, H, W]."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: size[0], : size[1], : size[2]]
    centre = np.array(size) / 2 + rng.uniform(-1.5, 1.5, 3)
    body = ((z - size[0] / 2) / (size[0] * 0.45)) ** 2 + ((y - size[1] / 2) / (size[1] * 0.45)) ** 2 + (
        (x - size[2] / 2) / (size[2] * 0.45)
    ) ** 2 < 1
    tumour = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 < rng.uniform(6, 12)
    bias = 1 + 0.3 * x / size[2]
    t1 = (body * 100 + tumour * 80 + rng.normal(0, 5, size)) * bias
    t2 = (body * 60 + tumour * 150 + rng.normal(0, 5, size)) * bias
    return {"t1": t1.astype(np.float32), "t2": t2.astype(np.float32), "mask": tumour.astype(np.uint8)}


def to_image(arr: np.ndarray, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def write_dicom_series(folder: Path, image: sitk.Image) -> None:
    """One file per slice, with the tags a series reader needs to rebuild the geometry."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(sitk.RescaleIntensity(image, 0, 4000), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1." + str(abs(hash(str(folder))) % 10**12)
    direction = image.GetDirection()
    for z in range(image.GetDepth()):
        piece = image[:, :, z]
        for tag, value in (
            ("0008|0060", "MR"),
            ("0020|000e", series_uid),
            ("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, z))))),
            (
                "0020|0037",
                "\\".join(map(str, (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7]))),
            ),
            ("0020|0013", str(z + 1)),
            ("0018|0050", str(image.GetSpacing()[2])),
        ):
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(piece)


def write_mri(patient_dir: Path, seed: int, fmt: str = "nii.gz", dicom_t1: bool = False) -> None:
    patient_dir.mkdir(parents=True, exist_ok=True)
    for role, arr in phantom(seed).items():
        image = to_image(arr)
        if role == "t1" and dicom_t1:
            write_dicom_series(patient_dir / "t1", image)
        else:
            sitk.WriteImage(image, str(patient_dir / f"{role}.{fmt}"))


def write_slide(path: Path, seed: int = 0, tissue: bool = True, mpp: float = 0.5, size=(768, 1024)) -> None:
    """A 3-level tiled pyramidal RGB TIFF (deflate) with its microns per pixel."""
    rng = np.random.default_rng(seed)
    img = np.full((*size, 3), 236, np.uint8) + rng.integers(0, 6, (*size, 3), dtype=np.uint8)
    if tissue:
        h, w = size
        patch = rng.normal(0, 18, (h // 2, w // 2, 3)) + [175, 95, 165]
        img[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = patch.clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tw:
        for i, f in enumerate((1, 2, 4)):
            res = 1e4 / (mpp * f)
            tw.write(
                img[::f, ::f],
                subfiletype=1 if i else 0,
                tile=(128, 128),
                compression="deflate",
                photometric="rgb",
                resolution=(res, res),
                resolutionunit="CENTIMETER",
            )


COLUMNS = [
    "patient_id",
    "age",
    "sex",
    "tumour_size",
    "tumour_volume",
    "depth",
    "grade",
    "histology",
    "location",
    "neoadjuvant_chemo",
    "metastasis_at_presentation",
    "radiotherapy",
    "os_time",
    "os_event",
    "dm_time",
    "dm_event",
    "lr_time",
    "lr_event",
]


def clinical_row(pid: str, seed: int) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    return {
        "patient_id": pid,
        "age": f"{rng.uniform(30, 80):.1f}",
        "sex": ["female", "male"][seed % 2],
        "tumour_size": f"{rng.uniform(2, 20):.1f}",
        "tumour_volume": f"{rng.uniform(5, 900):.1f}",
        "depth": ["superficial", "deep"][seed % 2],
        "grade": str(1 + seed % 3),
        "histology": "ups",
        "location": "lower_extremity",
        "neoadjuvant_chemo": str(seed % 2),
        "metastasis_at_presentation": "0",
        "radiotherapy": "preoperative",
        "os_time": str(200 + 50 * seed),
        "os_event": str((seed + 1) % 2),
        "dm_time": str(150 + 40 * seed),
        "dm_event": str(seed % 2),
        "lr_time": str(120 + 30 * seed),
        "lr_event": str(int(seed % 3 == 1)),
    }


def write_csv(path: Path, rows: list[dict[str, str]], columns=COLUMNS) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def make_site(root: Path, n: int = 3, slides: bool = True, policy: str = "skip") -> Path:
    """A good site of n patients (p0..p{n-1}, MRI as NIfTI, slides) -> its site YAML path."""
    root.mkdir(parents=True, exist_ok=True)
    write_csv(root / "clinical.csv", [clinical_row(f"p{i}", i) for i in range(n)])
    for i in range(n):
        write_mri(root / "mri" / f"p{i}", seed=i)
        if slides:
            write_slide(root / "wsi" / f"p{i}.tiff", seed=i)
    site_yaml = root / "site.yaml"
    site_yaml.write_text(yaml.safe_dump({"name": "test_site", "root": ".", "bad_patient_policy": policy, "cache_dir": "cache"}))
    return site_yaml


def expected_validation(clinical_csv: Path, pids: list[str], seed: int, fraction: float) -> set[str]:
    """The validation patients of a site whose usable patients are `pids`, under the federation's
    default selection settings (each patient's events summed over the endpoints of its CSV row)."""
    from stsfl.common.config.federation import SelectionConfig
    from stsfl.common.validation_split import validation_pids

    with open(clinical_csv, newline="") as handle:
        rows = {row["patient_id"]: row for row in csv.DictReader(handle)}
    events = [sum(rows[p][f"{e}_event"] == "1" for e in ("os", "dm", "lr") if f"{e}_event" in rows[p]) for p in pids]
    rule = SelectionConfig()
    return validation_pids(pids, events, seed, fraction, rule.min_site_validation_events, rule.max_validation_fraction)
