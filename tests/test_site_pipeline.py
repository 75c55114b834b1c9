"""The site as a whole: join by patient id, bad patients excluded and named, the dataset's
samples and batches, the preprocessing cache (warm runs, exact invalidation), augmentation, and
`sts-client validate`."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from site_builder import clinical_row, make_site, phantom, to_image, write_csv, write_mri, write_slide

from stsfl.client.cli import main as cli_main
from stsfl.client.data.site_dataset import SiteDataset, site_collate
from stsfl.client.data.site_prepare import prepare_site
from stsfl.client.mri.augment import augment_mri, mri_augmentation
from stsfl.client.problems import BadPatientError
from stsfl.common.clinical_features import clinical_dim
from stsfl.common.config import SiteConfig, load_config, load_preset

PRESET = load_preset("cpu-small")
# p3, p4, p5, p8 keep their clinical data (and p5 its MRI) although one of their images is unusable
USABLE = {"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p8"}


def build_messy_site(root):
    """p0 good; p1 DICOM T1, no slide; p2 no dm follow-up; p3 truncated T1; p4 slide OpenSlide
    cannot open; p5 slide without tissue; p6 CSV row but no images; p7 images but no CSV row;
    p8 empty mask; p9 event not 0/1."""
    site_yaml = make_site(root, n=2)
    rows = [clinical_row(f"p{i}", i) for i in range(10) if i != 7]
    rows[2] |= {"dm_time": "", "dm_event": ""}
    rows[8] |= {"os_event": "2"}  # p9
    write_csv(root / "clinical.csv", rows)
    shutil.rmtree(root / "mri" / "p1")
    write_mri(root / "mri" / "p1", seed=1, dicom_t1=True)
    (root / "wsi" / "p1.tiff").unlink()
    for i in (2, 3, 5, 7, 8, 9):
        write_mri(root / "mri" / f"p{i}", seed=i)
    t1 = (root / "mri" / "p3" / "t1.nii.gz").read_bytes()
    (root / "mri" / "p3" / "t1.nii.gz").write_bytes(t1[: len(t1) // 2])
    (root / "wsi" / "p4.svs").write_bytes(b"not a slide" * 50)
    write_slide(root / "wsi" / "p5.tiff", tissue=False)
    write_slide(root / "wsi" / "p7.tiff")
    sitk.WriteImage(to_image(phantom(8)["mask"] * 0), str(root / "mri" / "p8" / "mask.nii.gz"))
    return site_yaml


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    site_yaml = build_messy_site(root)
    site = load_config(site_yaml, SiteConfig)
    return site_yaml, site, prepare_site(site, site_yaml, PRESET, progress=False)


def test_bad_images_drop_a_modality_bad_rows_exclude_the_patient(messy):
    _, _, prepared = messy
    assert {p.pid for p in prepared.patients} == USABLE
    assert prepared.excluded == {"p7", "p9"}
    p5 = next(p for p in prepared.patients if p.pid == "p5")
    assert p5.mri_key is not None and p5.wsi_key is None
    # decoded: MRI of p0, p1, p2, p5 (p3, p8 fail); slide of p0 (p4, p5 fail); p7, p9 never reach decoding
    assert prepared.computed == {"mri": 4, "mri_failed": 2, "wsi": 1, "wsi_failed": 2, "wsi_tiles": 2}


@pytest.mark.parametrize(
    ("patient", "file_end", "column", "reason"),
    [
        ("p3", "p3/t1.nii.gz", None, "unreadable or truncated image"),
        ("p4", "p4.svs", None, "OpenSlide cannot open"),
        ("p5", "p5.tiff", None, "no tissue"),
        ("p6", "clinical.csv", None, "clinical data only"),
        ("p7", "p7", None, "MRI folder without a row in the clinical table"),
        ("p7", "p7.tiff", None, "slide without a row in the clinical table"),
        ("p8", "p8/mask.nii.gz", None, "mask is empty"),
        ("p9", "clinical.csv:10", "os_event", "is not 0 or 1"),
    ],
)
def test_each_problem_is_named_with_its_location(messy, patient, file_end, column, reason):
    _, _, prepared = messy
    hits = [p for p in prepared.problems if p.patient == patient and p.file.endswith(file_end) and reason in p.reason]
    assert len(hits) == 1, prepared.problems
    assert hits[0].column == column
    assert hits[0].severity == ("error" if patient in ("p7", "p9") else "warning")


def test_samples_carry_missing_modalities_and_endpoints_as_data(messy):
    _, _, prepared = messy
    ds = SiteDataset(prepared, pids=["p0", "p1", "p2", "p6"])
    s0, s1, s2, s6 = (ds[i] for i in range(4))
    assert s0.mri.shape == (2, *PRESET.mri.input_size) and s0.wsi.shape[1] == PRESET.wsi.embed_dim
    assert s1.mri is not None and s1.wsi is None
    assert s2.endpoint_observed.tolist() == [True, False, True] and s2.time[1] == 0 and s2.event[1] == 0
    assert s6.mri is None and s6.wsi is None
    assert s0.clinical.shape == (clinical_dim(prepared.schema),)
    batch = site_collate(PRESET)([s0, s1, s2, s6])
    assert batch.mri.shape == (4, 2, *PRESET.mri.input_size)
    assert batch.modality_present.tolist() == [[True, True, True], [True, False, True], [True, False, True], [False, False, True]]
    assert batch.wsi_mask[0].all() and not batch.wsi_mask[1].any()


def test_fail_policy_stops_the_site(messy):
    site_yaml, site, _ = messy
    with pytest.raises(BadPatientError, match="bad patient"):
        prepare_site(site, site_yaml, PRESET, policy="fail", progress=False)


def test_second_run_reads_the_cache_and_gets_the_same_tensors(messy):
    site_yaml, site, first = messy
    again = prepare_site(site, site_yaml, PRESET, progress=False)
    assert again.computed == {}  # nothing decoded again, not even the known-bad files
    assert [p.mri_key for p in again.patients] == [p.mri_key for p in first.patients]
    assert {(p.patient, p.reason) for p in again.problems} == {(p.patient, p.reason) for p in first.problems}
    a, b = SiteDataset(first)[0], SiteDataset(again)[0]
    assert np.array_equal(a.mri.numpy(), b.mri.numpy()) and np.array_equal(a.wsi.numpy(), b.wsi.numpy())


def test_changed_input_or_setting_invalidates_exactly_its_entries(tmp_path):
    site_yaml = make_site(tmp_path, n=3)
    site = load_config(site_yaml, SiteConfig)
    cold = prepare_site(site, site_yaml, PRESET, progress=False)
    assert cold.computed["mri"] == 3 and cold.computed["wsi"] == 3
    write_mri(tmp_path / "mri" / "p1", seed=11)  # new content for one patient
    changed = prepare_site(site, site_yaml, PRESET, progress=False)
    assert changed.computed == {"mri": 1}
    assert [p.mri_key != q.mri_key for p, q in zip(cold.patients, changed.patients)] == [False, True, False]
    pre = PRESET.preprocessing
    wider = PRESET.model_copy(
        update={"preprocessing": pre.model_copy(update={"mri": pre.mri.model_copy(update={"margin_mm": 4.0})})}
    )
    assert prepare_site(site, site_yaml, wider, progress=False).computed == {"mri": 3}
    one_tile = PRESET.model_copy(
        update={"preprocessing": pre.model_copy(update={"wsi": pre.wsi.model_copy(update={"max_tiles": 1})})}
    )
    assert prepare_site(site, site_yaml, one_tile, progress=False).computed == {"wsi": 3, "wsi_tiles": 3}


def test_augmentation_moves_both_channels_together_and_only_in_training(messy):
    rng = np.random.default_rng(0)
    t1 = rng.normal(size=(12, 12, 12)).astype(np.float32)
    volume = np.stack([t1, 2 * t1])
    transform = mri_augmentation(PRESET.preprocessing.augmentation)
    changed = 0
    for seed in range(6):
        out = augment_mri(transform, volume, seed)
        assert np.allclose(out[1], 2 * out[0], atol=1e-4)  # one spatial draw for both channels
        assert np.array_equal(out, augment_mri(transform, volume, seed))  # seeded
        changed += not np.allclose(out, volume)
    assert changed >= 4
    _, _, prepared = messy
    train, evaluation = SiteDataset(prepared, train=True), SiteDataset(prepared)
    cached = prepared.cache.load("mri", prepared.patients[0].mri_key)["volume"]
    assert np.array_equal(evaluation[0].mri.numpy(), cached)
    epochs = []
    for epoch in range(3):
        train.set_epoch(epoch)
        epochs.append(train[0].mri.numpy())
    assert not (np.array_equal(epochs[0], epochs[1]) and np.array_equal(epochs[1], epochs[2]))


@dataclass
class Validated:
    returncode: int
    stdout: str


def _validate(site_yaml, capsys, monkeypatch, *extra) -> Validated:
    """`sts-client validate --site site_yaml`, in this process (saves a fresh interpreter's imports)."""
    monkeypatch.setenv("COLUMNS", "250")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["validate", "--site", str(site_yaml), *extra])
    return Validated(exit_info.value.code, capsys.readouterr().out)


def test_validate_prints_usable_counts_and_every_problem(messy, capsys, monkeypatch, tmp_path):
    site_yaml, _, _ = messy
    proc = _validate(site_yaml, capsys, monkeypatch, "--preview", str(tmp_path / "crops.png"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "usable patients" in out and "the site can train" in out
    assert "endpoint dm" in out
    for reason in (
        "unreadable or truncated image",
        "OpenSlide cannot open",
        "no tissue",
        "mask is empty",
        "is not 0 or 1",
        "without a row in the clinical table",
    ):
        assert reason in out
    assert "crop preview of 4 patients" in out  # p0, p1, p2 and p5 (its slide left out) have MRI
    assert (tmp_path / "crops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validate_exits_nonzero_when_the_site_cannot_train(tmp_path, capsys, monkeypatch):
    site_yaml = make_site(tmp_path, n=1, slides=False)
    write_csv(tmp_path / "clinical.csv", [clinical_row("p0", 0)], columns=["patient_id", "age", "sex"])
    proc = _validate(site_yaml, capsys, monkeypatch)
    assert proc.returncode == 1
    assert "required column missing" in proc.stdout and "os_time" in proc.stdout
    # readable table, but every patient bad
    write_csv(tmp_path / "clinical.csv", [clinical_row("p0", 0) | {"os_time": "-3"}])
    proc = _validate(site_yaml, capsys, monkeypatch)
    assert proc.returncode == 1 and "no usable patient" in proc.stdout


def test_validate_under_fail_policy_refuses_a_site_with_bad_patients(tmp_path, capsys, monkeypatch):
    site_yaml = make_site(tmp_path, n=2, slides=False, policy="fail")
    write_csv(tmp_path / "clinical.csv", [clinical_row("p0", 0), clinical_row("p1", 1) | {"sex": "x"}])
    proc = _validate(site_yaml, capsys, monkeypatch)
    assert proc.returncode == 1 and "bad_patient_policy is 'fail'" in proc.stdout
    assert yaml.safe_load(site_yaml.read_text())["bad_patient_policy"] == "fail"


def test_radiomics_come_from_the_cached_crop_and_are_missing_without_a_usable_mri(messy):
    """The schema's `source: mri` variables: computed from each patient's cached crop, missing (and
    flagged missing in the encoded vector) for a patient whose MRI was left out or absent."""
    from stsfl.client.data.clinical_encoding import local_clinical_stats
    from stsfl.common.clinical_features import clinical_feature_names
    from stsfl.common.radiomics import first_order_radiomics

    _, _, prepared = messy
    names = [v.name for v in prepared.schema.mri_variables]
    assert names  # the default schema carries them
    by_pid = {p.pid: p for p in prepared.patients}
    assert by_pid["p3"].mri_key is None and by_pid["p6"].mri_key is None
    for pid in ("p3", "p6"):
        assert all(by_pid[pid].record.values[n] is None for n in names)
    for pid in ("p0", "p1", "p5"):
        volume = prepared.cache.load("mri", by_pid[pid].mri_key, ["volume"])["volume"]
        expected = first_order_radiomics(volume)
        assert [by_pid[pid].record.values[n] for n in names] == [expected[n] for n in names]
    stats = local_clinical_stats([p.record for p in prepared.patients], prepared.schema)
    ds = SiteDataset(prepared, stats, pids=["p0", "p6"])
    columns = clinical_feature_names(prepared.schema)
    flag = columns.index("mri_t2_skewness__missing")
    assert ds[0].clinical[flag] == 0 and ds[1].clinical[flag] == 1
    value = columns.index("mri_t2_skewness")
    assert ds[1].clinical[value] == 0  # imputed with the mean (0 after z-scoring)


def test_an_entry_cached_before_the_radiomics_gets_them_from_its_crop(messy, tmp_path):
    """set_radiomics reads the 7 numbers stored with the crop; an older entry without them is computed."""
    from stsfl.client.data.preprocess_cache import PreprocessCache
    from stsfl.client.data.site_prepare import set_radiomics

    _, _, prepared = messy
    patient = next(p for p in prepared.patients if p.pid == "p0")
    stored = prepared.cache.load("mri", patient.mri_key)
    assert stored["radiomics"].shape == (7,)
    old = PreprocessCache(tmp_path / "old-cache")
    old.store("mri", patient.mri_key, {k: v for k, v in stored.items() if k != "radiomics"})
    record = copy.deepcopy(patient.record)
    record.values.update({v.name: None for v in prepared.schema.mri_variables})
    set_radiomics(record, old, patient.mri_key, prepared.schema)
    assert record.values == patient.record.values
