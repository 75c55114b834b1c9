"""Generate a cohort: per-patient records and files, then per-centre CSVs, site.yaml, ground truth.

Every random draw of a patient comes from its own generators, seeded by (seed, centre, patient,
stream), so the output is the same whatever the number of worker processes or their order,
and changing e.g. the slide size leaves the clinical table and outcomes unchanged.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stsfl.client.lab.synthetic.clinical import draw_clinical
from stsfl.client.lab.synthetic.config import GENERATOR_VERSION, SynthConfig
from stsfl.client.lab.synthetic.hazard import describe_model, draw_latents, draw_outcomes, log_hazard_parts
from stsfl.client.lab.synthetic.mri import Geometry, acquisition_geometry, draw_limb, mask_from_labels, render_contrast, to_image
from stsfl.client.lab.synthetic.preview import write_preview
from stsfl.client.lab.synthetic.summary import summarise
from stsfl.client.lab.synthetic.tumour import draw_semi_axes, draw_tumour, ellipsoid_volume_cm3
from stsfl.client.lab.synthetic.writer import write_site_yaml, write_slide, write_volume
from stsfl.client.lab.synthetic.wsi import render_slide
from stsfl.common.console import UserError, console

CLINICAL_COLUMNS = [
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
# Independent random streams of one patient (LR_OUTCOME last: adding local recurrence left the
# other streams, hence every other outcome of a seed, as they were).
CLINICAL, LATENT, OUTCOME, SHAPE, TUMOUR, SCAN, SLIDE, MISSING, LR_OUTCOME = range(9)


def centre_name(centre: int) -> str:
    return f"center_{centre}"


def patient_id(centre: int, index: int) -> str:
    return f"C{centre}-{index + 1:04d}"


def patient_rng(seed: int, centre: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(centre, index, stream)))


def centre_sizes(config: SynthConfig) -> list[int]:
    """Number of patients of each centre, drawn from the seed."""
    return [
        int(
            np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(c,))).integers(
                config.patients_min, config.patients_max + 1
            )
        )
        for c in range(config.centers)
    ]


def patient_record(config: SynthConfig, centre: int, index: int) -> dict[str, object]:
    """Everything about a patient except the images: clinical row, latents, true log-hazard, outcomes."""
    profile = config.profile(centre)

    def rng(stream: int) -> np.random.Generator:
        return patient_rng(config.seed, centre, index, stream)

    clinical = draw_clinical(rng(CLINICAL), profile)
    clinical["tumour_volume"] = round(ellipsoid_volume_cm3(draw_semi_axes(rng(SHAPE), clinical["tumour_size"])), 2)
    latents = draw_latents(rng(LATENT))
    parts = log_hazard_parts(
        clinical, latents["necrosis_fraction"], latents["mitoses_per_mm2"], profile.log_baseline_shift, latents["oedema"]
    )
    missing = rng(MISSING).random(3)
    dm_missing = bool(missing[2] < config.missing_dm)
    outcomes = draw_outcomes(rng(OUTCOME), parts, profile, dm_missing=dm_missing, lr_rng=rng(LR_OUTCOME))
    return {
        "patient_id": patient_id(centre, index),
        "centre": centre_name(centre),
        **clinical,
        **outcomes,
        **parts,
        **latents,
        "has_mri": bool(missing[0] >= profile.missing_mri),
        "has_wsi": bool(missing[1] >= profile.missing_wsi),
    }


def _geometry_columns(prefix: str, geometry: Geometry) -> dict[str, str]:
    """Declared grid of an image, as ground_truth.csv columns: space-separated x y z."""

    def text(values: tuple[float, ...]) -> str:
        return " ".join(f"{v:g}" for v in values)

    return {
        f"{prefix}_size": text(geometry.size),
        f"{prefix}_spacing": text(geometry.spacing),
        f"{prefix}_origin": text(geometry.origin),
    }


def render_patient(config: SynthConfig, centre: int, index: int, centre_dir: Path) -> dict[str, object]:
    """`patient_record` plus the patient's files under `centre_dir` (mri/<pid>/*.nii.gz, wsi/<pid>.tiff)."""
    record = patient_record(config, centre, index)
    profile = config.profile(centre)
    pid = str(record["patient_id"])

    def rng(stream: int) -> np.random.Generator:
        return patient_rng(config.seed, centre, index, stream)

    if record["has_mri"]:
        tumour_rng, scan_rng = rng(TUMOUR), rng(SCAN)
        table_position = np.array([0.0, 0.0, tumour_rng.normal(0, 150)])
        tumour = draw_tumour(
            tumour_rng,
            draw_semi_axes(rng(SHAPE), float(record["tumour_size"])),
            float(record["necrosis_fraction"]),
            float(record["oedema"]),
            table_position,
            config.tumour_grid,
        )
        limb = draw_limb(tumour_rng, tumour, deep=record["depth"] == "deep")
        t1_geometry = acquisition_geometry(scan_rng, profile.t1, tumour, profile.oblique_deg)
        t2_geometry = acquisition_geometry(scan_rng, profile.t2, tumour, profile.oblique_deg) if profile.t2 else t1_geometry
        t1, t1_labels = render_contrast(scan_rng, tumour, limb, t1_geometry, "t1", profile)
        t2, t2_labels = render_contrast(scan_rng, tumour, limb, t2_geometry, "t2", profile)
        mask_geometry, mask_labels = (t2_geometry, t2_labels) if profile.mask_on == "t2" else (t1_geometry, t1_labels)
        folder = centre_dir / "mri" / pid
        write_volume(to_image(t1, t1_geometry), folder / "t1.nii.gz")
        write_volume(to_image(t2, t2_geometry), folder / "t2.nii.gz")
        write_volume(to_image(mask_from_labels(mask_labels), mask_geometry), folder / "mask.nii.gz")
        record |= _geometry_columns("t1", t1_geometry) | _geometry_columns("t2", t2_geometry)
        record["mask_grid"] = profile.mask_on
    if record["has_wsi"]:
        rgb, area = render_slide(rng(SLIDE), config.wsi, profile, float(record["mitoses_per_mm2"]))
        write_slide(rgb, centre_dir / "wsi" / f"{pid}.tiff", config.wsi)
        record["tissue_mm2"] = round(area, 4)
    return record


def _render_task(task: tuple[SynthConfig, int, int, Path]) -> dict[str, object]:
    return render_patient(*task)


def _start_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes, started before any progress-bar thread exists.

    Fork (where available) spares each worker re-importing numpy, scipy and SimpleITK; it copies
    only the calling thread, so the workers are started here, before the progress bar's thread.
    """
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=get_context(method))
    list(pool.map(abs, range(workers)))
    return pool


def _write_tables(records: pd.DataFrame, staging: Path, final: Path) -> None:
    for name, rows in records.groupby("centre", sort=True):
        centre_dir = staging / str(name)
        centre_dir.mkdir(parents=True, exist_ok=True)
        table = rows[CLINICAL_COLUMNS].copy()
        for column in ("dm_time", "dm_event"):
            table[column] = table[column].astype("Int64")
        table.to_csv(centre_dir / "clinical.csv", index=False)
        write_site_yaml(centre_dir, str(name), final / str(name))
    truth = records.drop(columns=[c for c in CLINICAL_COLUMNS if c != "patient_id"])
    truth.to_csv(staging / "ground_truth.csv", index=False, float_format="%.6g")


def _check_target(out: Path) -> None:
    if out.exists() and not (out / "cohort.json").is_file() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a synthetic cohort (no cohort.json); choose an empty or new folder")


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def generate_cohort(config: SynthConfig, out: str | Path, show_progress: bool = True) -> dict[str, object]:
    """Write the cohort of `config` to `out` (replacing a previous cohort there); returns cohort.json's content."""
    out = Path(out).resolve()
    _check_target(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.perf_counter()
    tasks = [(config, c, i, staging / centre_name(c)) for c, n in enumerate(centre_sizes(config)) for i in range(n)]
    pool = _start_pool(config.workers) if config.workers > 1 and len(tasks) > 1 else None
    columns = [TextColumn("synthetic cohort"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    records = []
    try:
        with Progress(*columns, console=console, disable=not show_progress) as progress:
            bar = progress.add_task("patients", total=len(tasks))
            for record in pool.map(_render_task, tasks) if pool else map(_render_task, tasks):
                records.append(record)
                progress.advance(bar)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    frame = pd.DataFrame.from_records(records)
    _write_tables(frame, staging, out)
    if frame["has_mri"].any() and frame["has_wsi"].any():
        write_preview(staging, frame)
    cohort = {
        "generator": GENERATOR_VERSION,
        "settings_hash": config.settings_hash(),
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "hazard_model": describe_model(),
        **summarise(frame),
        "seconds": round(time.perf_counter() - started, 1),
        "disk_bytes": _folder_bytes(staging),
    }
    (staging / "cohort.json").write_text(json.dumps(cohort, indent=2))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return cohort


def read_cohort(out: str | Path) -> dict[str, object] | None:
    """cohort.json of a generated cohort, or None if `out` holds none."""
    path = Path(out) / "cohort.json"
    return json.loads(path.read_text()) if path.is_file() else None
