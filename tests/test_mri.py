"""MRI through SimpleITK: formats (NIfTI, NRRD, DICOM series), alignment onto the T1 grid, N4,
crop + resize + z-score, and every bad MRI input named with its file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk
from site_builder import phantom, to_image, write_dicom_series, write_mri

from stsfl.client.mri.mri_io import MriPaths, find_mri_inputs, read_image
from stsfl.client.mri.mri_preprocess import mask_crop_box, preprocess_mri
from stsfl.client.problems import PatientDataError
from stsfl.common.config import load_preset

CFG = load_preset("cpu-small").preprocessing.mri
SIZE = (12, 12, 12)


def paths(folder):
    return find_mri_inputs(folder)


def test_output_is_two_zscored_channels_of_input_size(tmp_path):
    write_mri(tmp_path, seed=0)
    result = preprocess_mri(paths(tmp_path), CFG, SIZE)
    assert result.volume.shape == (2, *SIZE) and result.volume.dtype == np.float32
    assert result.volume.mean(axis=(1, 2, 3)) == pytest.approx([0, 0], abs=1e-4)
    assert result.volume.std(axis=(1, 2, 3)) == pytest.approx([1, 1], abs=1e-3)
    assert result.seconds["n4"] > 0


def test_dicom_series_and_nrrd_read_like_nifti(tmp_path):
    write_mri(tmp_path / "nii", seed=3)
    write_mri(tmp_path / "nrrd", seed=3, fmt="nrrd")
    write_mri(tmp_path / "dcm", seed=3, dicom_t1=True)
    dicom = read_image(paths(tmp_path / "dcm").t1)
    nifti = read_image(paths(tmp_path / "nii").t1)
    assert dicom.GetSize() == nifti.GetSize()
    assert dicom.GetSpacing() == pytest.approx(nifti.GetSpacing())
    # the DICOM was rescaled to int16: same image up to a linear map
    corr = np.corrcoef(sitk.GetArrayFromImage(dicom).ravel(), sitk.GetArrayFromImage(nifti).ravel())[0, 1]
    assert corr > 0.999
    a = preprocess_mri(paths(tmp_path / "nii"), CFG, SIZE).volume
    b = preprocess_mri(paths(tmp_path / "nrrd"), CFG, SIZE).volume
    assert np.allclose(a, b, atol=1e-4)


def test_t2_on_another_grid_is_resampled_onto_t1(tmp_path):
    write_mri(tmp_path / "same", seed=1)
    write_mri(tmp_path / "other", seed=1)
    t2 = read_image(tmp_path / "same" / "t2.nii.gz")
    # T2 at half the in-plane resolution, same physical extent
    coarse = sitk.Resample(
        t2,
        [s // 2 for s in t2.GetSize()[:2]] + [t2.GetSize()[2]],
        sitk.Transform(),
        sitk.sitkLinear,
        t2.GetOrigin(),
        (2.0, 2.0, 2.0),
        t2.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )
    coarse.SetOrigin(t2.TransformContinuousIndexToPhysicalPoint((0.5, 0.5, 0)))
    sitk.WriteImage(coarse, str(tmp_path / "other" / "t2.nii.gz"))
    same = preprocess_mri(paths(tmp_path / "same"), CFG, SIZE).volume
    other = preprocess_mri(paths(tmp_path / "other"), CFG, SIZE).volume
    assert np.array_equal(same[0], other[0])  # T1 channel untouched
    assert np.corrcoef(same[1].ravel(), other[1].ravel())[0, 1] > 0.9


def test_n4_removes_a_smooth_bias_field(tmp_path):
    size = (24, 32, 32)
    arrays = phantom(5, size=size)
    arrays["mask"][:] = 1  # crop = the whole image, resized onto its own grid
    for role, arr in arrays.items():
        sitk.WriteImage(to_image(arr), str(tmp_path / f"{role}.nii.gz"))
    off = CFG.model_copy(update={"n4": CFG.n4.model_copy(update={"enabled": False})})
    n4_on = preprocess_mri(paths(tmp_path), CFG, size).volume[0]
    n4_off = preprocess_mri(paths(tmp_path), off, size).volume[0]
    # healthy body tissue only (tumour excluded): its intensity should not depend on x
    clean = phantom(5, size=size)
    body = (clean["t1"] > 60) & (clean["t1"] < 150)
    x = np.broadcast_to(np.arange(size[2])[None, None, :], size)
    slope = lambda v: np.polyfit(x[body], v[body], 1)[0]  # noqa: E731
    assert slope(n4_off) > 0.01  # the phantom's bias grows along x
    assert abs(slope(n4_on)) < 0.2 * slope(n4_off)


def test_crop_box_grows_by_margin_in_mm():
    mask = np.zeros((10, 20, 20), bool)
    mask[5, 10, 10] = True
    box = mask_crop_box(mask, (2.0, 1.0, 1.0), margin_mm=3.0)
    assert box == (slice(3, 8), slice(7, 14), slice(7, 14))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path):
    path.write_bytes(gzip.compress(b"not an image at all" * 10))


def _moved(origin):
    def move(path):
        image = read_image(path)
        image.SetOrigin(origin)
        sitk.WriteImage(image, str(path))

    return move


def _emptied(path):
    sitk.WriteImage(read_image(path) * 0, str(path))


@pytest.mark.parametrize(
    ("role", "spoil", "reason"),
    [
        ("t2", _truncate, "unreadable or truncated image"),
        ("t1", _garbage, "unreadable or truncated image"),
        ("t2", _moved((500.0, 0.0, 0.0)), "T2 does not overlap T1 in physical space: cannot be aligned"),
        ("t2", _moved((15.0, 0.0, 0.0)), r"T2 covers only \d+% of the tumour crop.*cannot be aligned"),  # overlaps one edge
        ("mask", _emptied, "mask is empty"),
        ("mask", _moved((0.0, 0.0, 300.0)), "mask lies outside the T1 image"),
    ],
    ids=["truncated", "garbage", "no-overlap", "little-overlap", "empty-mask", "mask-outside"],
)
def test_bad_mri_input_is_named_with_its_file(tmp_path, role, spoil, reason):
    write_mri(tmp_path, seed=0)
    spoil(tmp_path / f"{role}.nii.gz")
    with pytest.raises(PatientDataError, match=reason) as err:
        preprocess_mri(paths(tmp_path), CFG, SIZE)
    assert err.value.file == str(tmp_path / f"{role}.nii.gz")


def test_missing_role_and_empty_dicom_folder_are_named(tmp_path):
    write_mri(tmp_path, seed=0)
    (tmp_path / "mask.nii.gz").unlink()
    with pytest.raises(PatientDataError, match="no mask image"):
        find_mri_inputs(tmp_path)
    (tmp_path / "mask").mkdir()
    (tmp_path / "mask" / "notes.txt").write_text("scanner export failed")
    with pytest.raises(PatientDataError, match="no DICOM series in folder"):
        read_image(find_mri_inputs(tmp_path).mask)


def test_dicom_writer_helper_round_trips_geometry(tmp_path):
    image = to_image(phantom(0)["t1"], spacing=(0.8, 0.8, 3.0), origin=(1.0, 2.0, 3.0))
    write_dicom_series(tmp_path / "s", image)
    back = read_image(tmp_path / "s")
    assert back.GetSpacing() == pytest.approx((0.8, 0.8, 3.0)) and back.GetOrigin() == pytest.approx((1.0, 2.0, 3.0))
    assert isinstance(MriPaths(tmp_path, tmp_path, tmp_path).all(), list)
