"""The synthetic cohort: real files with the declared geometry, determinism, a known hazard whose
imaging parts are visible in the images, and a CLI that names bad config keys.

The tiny cohort (configs/synth-tiny.yaml, ~34 patients) is generated once per session.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import openslide
import pandas as pd
import pytest
import SimpleITK as sitk
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from scipy import ndimage, stats

from stsfl.client.lab import cli as lab
from stsfl.client.lab.synthetic import SynthConfig, generate_cohort, load_synth_config, read_cohort
from stsfl.client.lab.synthetic.generate import centre_sizes, patient_record
from stsfl.client.lab.synthetic.summary import oracle_c
from stsfl.common.config import SiteConfig, load_config, load_schema


@pytest.fixture(scope="session")
def tiny_config() -> SynthConfig:
    return load_synth_config(tiny=True)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory, tiny_config) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    generate_cohort(tiny_config, out, show_progress=False)
    return out


@pytest.fixture(scope="session")
def truth(tiny_cohort) -> pd.DataFrame:
    return pd.read_csv(tiny_cohort / "ground_truth.csv")


@pytest.fixture(scope="session")
def many_records() -> pd.DataFrame:
    """Clinical rows, latents and outcomes (no images) of 4 x 400 patients of the default config."""
    config = SynthConfig(seed=3)
    return pd.DataFrame([patient_record(config, c, i) for c in range(4) for i in range(400)])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def triple(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split())


# --- files and the site data contract --------------------------------------------------------


def test_each_centre_is_a_site_folder_with_schema_columns_and_a_valid_site_yaml(tiny_cohort, tiny_config):
    schema = load_schema()
    # the MRI radiomics are computed by the site from the crops, not written by the generator
    expected = ["patient_id", *(v.name for v in schema.table_variables)]
    expected += [c for e in schema.endpoints for c in (e.time_column, e.event_column)]
    ids = []
    for centre, n in enumerate(centre_sizes(tiny_config)):
        folder = tiny_cohort / f"center_{centre}"
        site = load_config(folder / "site.yaml", SiteConfig)
        assert site.name == f"center_{centre}" and site.root == folder.resolve()
        table = pd.read_csv(folder / site.layout.clinical_csv)
        assert list(table.columns) == expected and len(table) == n
        for var in schema.table_variables:
            values = table[var.name]
            if var.kind == "categorical":
                assert set(values.astype(str)) <= set(var.categories), var.name
            elif var.kind == "binary":
                assert set(values) <= {0, 1}, var.name
            else:
                assert values.between(var.min, var.max).all(), var.name
        assert (table["os_time"] > 0).all() and set(table["os_event"]) <= {0, 1}
        ids += list(table["patient_id"])
    assert len(ids) == len(set(ids))


def test_mri_files_open_in_simpleitk_with_the_declared_geometry(tiny_cohort, truth):
    with_mri = truth[truth["has_mri"]]
    assert len(with_mri) > 0
    for row in with_mri.itertuples():
        folder = tiny_cohort / row.centre / "mri" / row.patient_id
        images = {name: sitk.ReadImage(str(folder / f"{name}.nii.gz")) for name in ("t1", "t2", "mask")}
        for name in ("t1", "t2"):
            image = images[name]
            assert image.GetSize() == tuple(int(v) for v in triple(getattr(row, f"{name}_size")))
            assert image.GetSpacing() == pytest.approx(triple(getattr(row, f"{name}_spacing")), abs=1e-4)
            assert image.GetOrigin() == pytest.approx(triple(getattr(row, f"{name}_origin")), abs=1e-3)
            assert image.GetPixelID() == sitk.sitkInt16
        grid = images[row.mask_grid]
        mask = images["mask"]
        assert mask.GetSize() == grid.GetSize() and mask.GetDirection() == pytest.approx(grid.GetDirection())
        voxels = sitk.GetArrayFromImage(mask)
        assert set(np.unique(voxels)) == {0, 1}, f"{row.patient_id}: empty or non-binary mask"
        # The tumour lies inside the field of view: no mask voxel on the in-plane border.
        assert voxels[:, [0, -1], :].sum() == 0 and voxels[:, :, [0, -1]].sum() == 0


def test_modalities_present_exactly_as_declared_and_center_1_misses_slides(tiny_cohort, truth):
    for row in truth.itertuples():
        assert (tiny_cohort / row.centre / "mri" / row.patient_id / "t1.nii.gz").is_file() == row.has_mri
        assert (tiny_cohort / row.centre / "wsi" / f"{row.patient_id}.tiff").is_file() == row.has_wsi
    assert not truth.loc[truth["centre"] == "center_1", "has_wsi"].all()


def test_center_2_masks_are_on_the_t2_grid_which_differs_from_t1(truth):
    centre_2 = truth[(truth["centre"] == "center_2") & truth["has_mri"]]
    assert (centre_2["mask_grid"] == "t2").all()
    assert (centre_2["t1_spacing"] != centre_2["t2_spacing"]).all()


def test_slides_open_in_openslide_with_declared_size_levels_and_mpp(tiny_cohort, truth, tiny_config):
    settings = tiny_config.wsi
    for row in truth[truth["has_wsi"]].itertuples():
        with openslide.OpenSlide(tiny_cohort / row.centre / "wsi" / f"{row.patient_id}.tiff") as slide:
            assert slide.dimensions == (settings.width, settings.height)
            assert slide.level_count == settings.levels
            assert slide.level_downsamples == pytest.approx([2**i for i in range(settings.levels)])
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(settings.mpp)
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(settings.mpp)
            assert int(slide.properties["openslide.level[0].tile-width"]) == settings.tile


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_identical_files_whatever_the_worker_count(tmp_path, tiny_cohort, tiny_config, truth):
    # Centre 0 alone, in one process: per-patient seeding makes its files those of the whole cohort.
    again = tmp_path / "again"
    generate_cohort(tiny_config.model_copy(update={"workers": 1, "centers": 1}), again, show_progress=False)
    patient = truth[truth["has_mri"] & truth["has_wsi"] & (truth["centre"] == "center_0")].iloc[0]
    files = [
        Path("center_0") / "clinical.csv",
        Path("center_0") / "mri" / patient.patient_id / "t1.nii.gz",
        Path("center_0") / "mri" / patient.patient_id / "mask.nii.gz",
        Path("center_0") / "wsi" / f"{patient.patient_id}.tiff",
    ]
    for name in files:
        assert sha256(again / name) == sha256(tiny_cohort / name), name
    expected = truth[truth["centre"] == "center_0"].reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_csv(again / "ground_truth.csv"), expected, check_dtype=False)


def test_a_different_seed_gives_different_patients(tmp_path, tiny_cohort, tiny_config):
    other = tmp_path / "other"
    generate_cohort(
        tiny_config.model_copy(update={"seed": 1, "centers": 1, "patients_min": 2, "patients_max": 2}),
        other,
        show_progress=False,
    )
    first = pd.read_csv(other / "center_0" / "clinical.csv").iloc[0]
    assert not first.equals(pd.read_csv(tiny_cohort / "center_0" / "clinical.csv").iloc[0])
    for name in ("mri/C0-0001/t1.nii.gz", "wsi/C0-0001.tiff"):
        if (other / "center_0" / name).is_file():
            assert sha256(other / "center_0" / name) != sha256(tiny_cohort / "center_0" / name)


# --- the known hazard --------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["os", "dm", "lr"])
def test_oracle_c_is_well_above_chance_and_images_add_to_clinical(many_records, endpoint):
    full, clinical = oracle_c(many_records, endpoint), oracle_c(many_records, endpoint, "clinical")
    assert 0.72 < full < 0.9
    assert full - clinical > 0.06
    for _, rows in many_records.groupby("centre"):
        assert oracle_c(rows, endpoint) > 0.68


@pytest.mark.parametrize("endpoint, tolerance", [("os", 0.1), ("dm", 0.15), ("lr", 0.15)])
def test_cox_model_on_the_true_log_hazard_reaches_the_oracle_with_unit_coefficient(many_records, endpoint, tolerance):
    data = many_records[[f"{endpoint}_log_hazard", f"{endpoint}_time", f"{endpoint}_event"]].dropna()
    cox = CoxPHFitter().fit(data, duration_col=f"{endpoint}_time", event_col=f"{endpoint}_event")
    assert cox.params_.iloc[0] == pytest.approx(1.0, abs=tolerance)
    assert cox.concordance_index_ == pytest.approx(oracle_c(many_records, endpoint), abs=1e-3)


def test_first_event_is_the_earliest_of_dm_lr_and_death_and_matches_the_observed_columns(many_records):
    followed = many_records.dropna(subset=["dm_event"])
    by_cause = {cause: rows for cause, rows in followed.groupby("first_event")}
    assert set(by_cause) == {"none", "dm", "lr", "death"}
    assert (by_cause["dm"]["dm_event"] == 1).all() and (by_cause["dm"]["dm_time"] == by_cause["dm"]["first_event_time"]).all()
    assert (by_cause["lr"]["lr_event"] == 1).all() and (by_cause["lr"]["lr_time"] == by_cause["lr"]["first_event_time"]).all()
    death = by_cause["death"]
    # death first: dm and lr are censored on the day of death (the competing event the schema declares)
    assert (death["os_event"] == 1).all() and (death[["dm_event", "lr_event"]] == 0).all().all()
    assert (death["dm_time"] == death["os_time"]).all() and (death["lr_time"] == death["os_time"]).all()
    assert (by_cause["none"][["os_event", "dm_event", "lr_event"]] == 0).all().all()
    # the first event never comes after any observed event
    for endpoint in ("os", "dm", "lr"):
        happened = followed[f"{endpoint}_event"] == 1
        assert (followed.loc[happened, "first_event_time"] <= followed.loc[happened, f"{endpoint}_time"]).all()


def test_local_recurrence_is_more_frequent_without_radiotherapy(many_records):
    rates = many_records.groupby("radiotherapy")["lr_event"].mean()
    assert 0.1 < many_records["lr_event"].mean() < 0.35
    assert rates["none"] > 1.4 * max(rates["preoperative"], rates["postoperative"])


def test_censoring_is_both_administrative_and_random(many_records):
    events, times = many_records["os_event"], many_records["os_time"]
    assert 0.2 < events.mean() < 0.6
    # Centre 1 follows for at most 6 years: nobody there is censored later than that.
    centre_1 = many_records[many_records["centre"] == "center_1"]
    assert centre_1["os_time"].max() <= 6 * 365.25 + 1
    # Random loss to follow-up censors some patients well before the shortest administrative follow-up.
    assert ((events == 0) & (times < 365)).sum() > 0


def test_imaging_latents_are_independent_of_tumour_volume(many_records):
    for latent in ("necrosis_fraction", "mitoses_per_mm2"):
        rho = stats.spearmanr(many_records[latent], many_records["tumour_volume"]).statistic
        assert abs(rho) < 0.1, latent


# --- the imaging latents are visible in the images -----------------------------------------------


def dark_fraction_in_resampled_crop(t1: sitk.Image, mask: sitk.Image, cube: int = 24) -> tuple[float, float]:
    """Share of non-enhancing (dark) T1 voxels inside the mask after cropping the mask's bounding box
    plus a 10% margin and resampling to cube^3 (as a data pipeline would), and the mask volume in ml."""
    t1_on_mask = sitk.Resample(t1, mask, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    image, labels = sitk.GetArrayFromImage(t1_on_mask), sitk.GetArrayFromImage(mask)
    lo, hi = np.argwhere(labels).min(axis=0), np.argwhere(labels).max(axis=0) + 1
    pad = np.maximum(1, ((hi - lo) * 0.1).astype(int))
    box = tuple(slice(max(0, a - p), b + p) for a, b, p in zip(lo, hi, pad))
    zoom = [cube / n for n in image[box].shape]
    crop = ndimage.zoom(image[box], zoom, order=1)
    inside = ndimage.zoom(labels[box].astype(np.float32), zoom, order=1) > 0.5
    values = crop[inside]
    volume = labels.sum() * np.prod(mask.GetSpacing()) / 1000
    return float((values < 0.5 * np.percentile(values, 90)).mean()), float(volume)


def test_necrosis_fraction_is_measurable_on_a_resampled_t1_crop_and_is_not_volume(tiny_cohort, truth):
    rows = truth[truth["has_mri"]]
    measured, volumes = zip(
        *(
            dark_fraction_in_resampled_crop(
                sitk.ReadImage(str(tiny_cohort / r.centre / "mri" / r.patient_id / "t1.nii.gz")),
                sitk.ReadImage(str(tiny_cohort / r.centre / "mri" / r.patient_id / "mask.nii.gz")),
            )
            for r in rows.itertuples()
        )
    )
    assert stats.spearmanr(measured, rows["necrosis_fraction"]).statistic > 0.7
    assert abs(stats.spearmanr(measured, volumes).statistic) < 0.4


def dark_figure_fraction(path: Path, tile: int = 256) -> float:
    """Share of near-black pixels (mitosis-like figures) among tissue pixels of all level-0 tiles."""
    dark = tissue = 0
    with openslide.OpenSlide(path) as slide:
        width, height = slide.dimensions
        for x in range(0, width, tile):
            for y in range(0, height, tile):
                rgb = np.asarray(slide.read_region((x, y), 0, (tile, tile)).convert("RGB"), dtype=np.float32)
                luminance = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
                tissue += int((luminance < 220).sum())
                dark += int((luminance < 80).sum())
    return dark / max(tissue, 1)


def test_mitosis_density_is_measurable_from_openslide_tiles(tiny_cohort, truth):
    rows = truth[truth["has_wsi"]]
    measured = [dark_figure_fraction(tiny_cohort / r.centre / "wsi" / f"{r.patient_id}.tiff") for r in rows.itertuples()]
    assert stats.spearmanr(measured, rows["mitoses_per_mm2"]).statistic > 0.7


# --- cohort.json, CLI ------------------------------------------------------------------------------


def test_cohort_json_counts_and_oracle_match_the_files(tiny_cohort, tiny_config, truth):
    cohort = read_cohort(tiny_cohort)
    assert cohort["settings_hash"] == tiny_config.settings_hash()
    for name, row in cohort["centres"].items():
        clinical = pd.read_csv(tiny_cohort / name / "clinical.csv")
        merged = clinical.merge(truth, on="patient_id")
        assert row["patients"] == len(clinical)
        assert row["events"]["os"] == clinical["os_event"].sum()
        assert row["with_wsi"] == merged["has_wsi"].sum()
        assert row["first_events"] == merged["first_event"].value_counts().to_dict()
        if clinical["os_event"].sum():
            expected = concordance_index(merged["os_time"], -merged["os_log_hazard"], merged["os_event"])
            assert row["oracle_c"]["os"] == pytest.approx(expected, abs=1e-4)


def test_bundled_synth_yaml_is_the_default_config(repo_root):
    assert load_config(repo_root / "configs" / "synth.yaml", SynthConfig) == SynthConfig()


def test_cli_rejects_a_bad_synth_config_naming_the_key_path(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("centers: 2\nprofiles:\n  - t1: {size: [32, 32, 8], spacing: [3, 3, 12]}\n    bias_strenght: 0.1\n")
    with pytest.raises(SystemExit) as exit_info:
        lab.main(["synth", "--config", str(bad), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert str(bad) in message and "profiles[0].bias_strenght" in message and "unknown key" in message
    assert not (tmp_path / "out").exists()


def test_cli_rejects_a_bad_override_naming_the_key(tmp_path, capsys):
    with pytest.raises(SystemExit):
        lab.main(["synth", "--tiny", "--patients-min", "20", "--patients-max", "10", "--out", str(tmp_path / "o")])
    assert "patients_min (20) exceeds patients_max (10)" in capsys.readouterr().err


def test_demo_keeps_an_existing_cohort_with_the_same_settings(tmp_path, tiny_cohort, tiny_config, monkeypatch):
    demo = tmp_path / "demo"
    shutil.copytree(tiny_cohort, demo)
    monkeypatch.setattr(lab, "DEMO_COHORT", demo)
    monkeypatch.setattr("stsfl.client.lab.synthetic.load_synth_config", lambda *a, **k: tiny_config)
    before = (demo / "cohort.json").stat().st_mtime_ns
    cohort_dir, cohort = lab.demo_cohort(tiny=False)
    assert cohort_dir == demo and cohort["settings_hash"] == tiny_config.settings_hash()
    assert (demo / "cohort.json").stat().st_mtime_ns == before
    # other settings: the cohort is made again
    monkeypatch.setattr(
        "stsfl.client.lab.synthetic.load_synth_config", lambda *a, **k: tiny_config.model_copy(update={"seed": 7})
    )
    _, again = lab.demo_cohort(tiny=False)
    assert again["seed"] == 7 and (demo / "cohort.json").stat().st_mtime_ns != before


def test_cli_synth_writes_a_cohort_and_prints_the_oracle_table(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["synth", "--tiny", "--centers", "2", "--patients-min", "3", "--patients-max", "3", "--seed", "5"]
    with pytest.raises(SystemExit) as exit_info:
        lab.main([*args, "--out", str(out)])
    assert exit_info.value.code == 0
    cohort = read_cohort(out)
    assert cohort["seed"] == 5 and cohort["pooled"]["patients"] == 6
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["center_0", "center_1"]
    printed = capsys.readouterr().err
    assert "oracle" in printed and "Harrell" in printed and "center_1" in printed and "pooled" in printed


def test_cli_refuses_to_overwrite_a_folder_that_is_not_a_cohort(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        lab.main(["synth", "--tiny", "--out", str(foreign)])
    assert exit_info.value.code == 2
    assert "is not a synthetic cohort" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
