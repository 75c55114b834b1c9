"""Find and read a patient's MRI inputs with SimpleITK: single files (.nii.gz, .nrrd, .mha, ...)
or DICOM series folders. Read errors become PatientDataError naming the file."""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from stsfl.client.problems import PatientDataError

MRI_ROLES = ("t1", "t2", "mask")


@dataclass(frozen=True)
class MriPaths:
    """A patient's T1, T2 and mask inputs: each a file or a DICOM series folder."""

    t1: Path
    t2: Path
    mask: Path

    def all(self) -> list[Path]:
        return [self.t1, self.t2, self.mask]


def find_mri_inputs(patient_dir: Path) -> MriPaths:
    """The t1.*, t2.* and mask.* entries of a patient folder (a file or a folder named t1, ...)."""
    found: dict[str, Path] = {}
    for role in MRI_ROLES:
        matches = sorted(p for p in patient_dir.iterdir() if p.name == role or p.name.startswith(role + "."))
        if not matches:
            raise PatientDataError(
                f"no {role} image (expected {role}.nii.gz, {role}.nrrd, ... or a DICOM folder {role}/)", str(patient_dir)
            )
        if len(matches) > 1:
            raise PatientDataError(f"more than one {role} image: {', '.join(p.name for p in matches)}", str(patient_dir))
        found[role] = matches[0]
    return MriPaths(**found)


def input_files(path: Path) -> list[Path]:
    """The files whose content an input consists of (a DICOM folder: all its files, sorted)."""
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _nifti_sizes(header: bytes) -> tuple[int, int] | None:
    """(expected total bytes, header bytes) from a NIfTI-1 or NIfTI-2 header; None if not NIfTI."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            dims = struct.unpack(endian + "8q", header[16:80])
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    voxels = 1
    for d in dims[1 : dims[0] + 1]:
        voxels *= max(int(d), 1)
    return offset + voxels * bitpix // 8, offset


def check_nifti_complete(path: Path) -> None:
    """ITK reads a truncated NIfTI without complaint (the missing part becomes zeros): compare the
    (decompressed) size with the size its header promises."""
    try:
        if path.name.endswith(".gz"):
            size, header = 0, b""
            with gzip.open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    header = header or chunk[:540]
                    size += len(chunk)
        else:
            size = path.stat().st_size
            with open(path, "rb") as handle:
                header = handle.read(540)
    except (EOFError, OSError, zlib.error) as err:
        raise PatientDataError(f"unreadable or truncated image ({err})", str(path)) from None
    sizes = _nifti_sizes(header)
    if sizes is not None and size < sizes[0]:
        raise PatientDataError(f"unreadable or truncated image ({size} bytes of the {sizes[0]} its header promises)", str(path))


def read_image(path: Path) -> sitk.Image:
    """A 3D scalar image from a file or a DICOM series folder."""
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise PatientDataError("no DICOM series in folder", str(path))
            if len(series) > 1:
                raise PatientDataError(f"{len(series)} DICOM series in one folder; keep one per folder", str(path))
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
            image = reader.Execute()
        else:
            if path.name.endswith((".nii", ".nii.gz")):
                check_nifti_complete(path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        # SimpleITK's message is several lines of ITK context; its last line says what failed.
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise PatientDataError(f"unreadable or truncated image ({detail})", str(path)) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise PatientDataError(
            f"expected a 3D scalar image, got {image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} components",
            str(path),
        )
    return image
