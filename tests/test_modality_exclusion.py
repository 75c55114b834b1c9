"""Modality-level exclusion: an unusable slide or MRI drops that modality only; the patient keeps
its other modalities and its clinical data. A bad clinical row still excludes the patient
(bad_patient_policy `skip`) or stops the site (`fail`). Real broken files: a truncated pyramidal
TIFF, a NIfTI mask that lies outside its T1 image, a patient folder without a mask."""

from __future__ import annotations

import pytest
import SimpleITK as sitk
from site_builder import clinical_row, make_site, phantom, to_image, write_csv

from stsfl.client.cli import main as cli_main
from stsfl.client.data.site_dataset import SiteDataset
from stsfl.client.data.site_prepare import prepare_site
from stsfl.client.problems import BadPatientError
from stsfl.common.config import SiteConfig, load_config, load_preset

PRESET = load_preset("cpu-small")


def build_site(root, policy="skip", bad_row=True):
    """p0 good; p1 truncated slide, good MRI; p2 mask outside the T1 image, good slide; p3 no mask
    file, good slide; p4 (when bad_row) good images but an unusable clinical row."""
    n = 5 if bad_row else 4
    site_yaml = make_site(root, n=n, policy=policy)
    rows = [clinical_row(f"p{i}", i) for i in range(n)]
    if bad_row:
        rows[4] |= {"os_time": "-3"}
    write_csv(root / "clinical.csv", rows)
    slide = root / "wsi" / "p1.tiff"
    slide.write_bytes(slide.read_bytes()[: slide.stat().st_size // 3])
    far = to_image(phantom(2)["mask"], origin=(500.0, 500.0, 500.0))  # a wrong mask: another patient's frame
    sitk.WriteImage(far, str(root / "mri" / "p2" / "mask.nii.gz"))
    (root / "mri" / "p3" / "mask.nii.gz").unlink()
    return site_yaml


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("partial")
    site_yaml = build_site(root)
    return prepare_site(load_config(site_yaml, SiteConfig), site_yaml, PRESET, progress=False)


def _dropped(prepared, pid):
    return [p for p in prepared.problems if p.patient == pid and p.severity == "warning" and " left out: " in p.reason]


def test_patient_keeps_the_modalities_that_are_good(prepared):
    kept = {p.pid: (p.mri_key is not None, p.wsi_key is not None) for p in prepared.patients}
    assert kept == {"p0": (True, True), "p1": (True, False), "p2": (False, True), "p3": (False, True)}
    assert prepared.excluded == {"p4"}  # the clinical row, not an image


@pytest.mark.parametrize(
    ("pid", "modality", "file_end", "reason"),
    [
        ("p1", "wsi", "wsi/p1.tiff", "OpenSlide cannot open"),
        ("p2", "mri", "p2/mask.nii.gz", "mask lies outside the T1 image"),
        ("p3", "mri", "mri/p3", "no mask image"),
    ],
)
def test_the_dropped_modality_is_named_with_file_and_reason(prepared, pid, modality, file_end, reason):
    (problem,) = _dropped(prepared, pid)
    assert problem.reason.startswith(f"{modality} left out: ") and reason in problem.reason
    assert problem.file.endswith(file_end)


def test_samples_carry_the_kept_modalities(prepared):
    ds = SiteDataset(prepared, pids=["p1", "p2"])
    s1, s2 = ds[0], ds[1]
    assert s1.mri is not None and s1.wsi is None
    assert s2.mri is None and s2.wsi.shape[1] == PRESET.wsi.embed_dim


def test_two_slides_for_one_patient_drop_the_slide_not_the_patient(tmp_path):
    site_yaml = make_site(tmp_path, n=2)
    (tmp_path / "wsi" / "p1.svs").write_bytes((tmp_path / "wsi" / "p1.tiff").read_bytes())
    got = prepare_site(load_config(site_yaml, SiteConfig), site_yaml, PRESET, progress=False)
    p1 = next(p for p in got.patients if p.pid == "p1")
    assert p1.mri_key is not None and p1.wsi_key is None
    (problem,) = _dropped(got, "p1")
    assert "2 slides for one patient" in problem.reason and "p1.svs" in problem.reason and "p1.tiff" in problem.reason


def test_fail_policy_is_about_clinical_rows_not_images(tmp_path):
    images_only = build_site(tmp_path / "images", policy="fail", bad_row=False)
    got = prepare_site(load_config(images_only, SiteConfig), images_only, PRESET, progress=False)
    assert len(got.patients) == 4 and len(_dropped(got, "p1")) == 1
    with_row = build_site(tmp_path / "row", policy="fail")
    with pytest.raises(BadPatientError, match="os_time"):
        prepare_site(load_config(with_row, SiteConfig), with_row, PRESET, progress=False)


def test_validate_says_which_modality_was_dropped(tmp_path, capsys, monkeypatch):
    site_yaml = build_site(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["validate", "--site", str(site_yaml)])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    assert "wsi left out: OpenSlide cannot open" in out and "mri left out: mask lies outside the T1 image" in out
