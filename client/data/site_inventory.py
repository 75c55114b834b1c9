"""What a site holds: its clinical table and, per patient id, where its MRI and slide are.

Cheap (no image is decoded): lists the folders of the site data contract (docs/site-operator.md),
`<root>/mri/<pid>/{t1,t2,mask}.*` and `<root>/wsi/<pid>.*`, joins them with clinical.csv by
patient id and records problems: images without a CSV row (error), a CSV row without any image
(warning: the patient is kept, clinical only), an incomplete MRI folder or two slides for one id
(warning: that modality is left out, the patient keeps the others).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stsfl.client.data.clinical_table import ClinicalTable, read_clinical_csv
from stsfl.client.mri.mri_io import MriPaths, find_mri_inputs
from stsfl.client.problems import PatientDataError, ProblemLog, drop_modality
from stsfl.common.config import ClinicalSchema, SiteConfig, load_schema


@dataclass
class PatientInputs:
    """One patient's image inputs; None = modality absent (data, not an error)."""

    mri: MriPaths | None = None
    wsi: Path | None = None


@dataclass
class SiteInventory:
    name: str
    root: Path
    schema: ClinicalSchema
    table: ClinicalTable
    inputs: dict[str, PatientInputs] = field(default_factory=dict)


def _under(root: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else root / path


def site_schema(site: SiteConfig, site_yaml: Path | None) -> ClinicalSchema:
    """The schema named by the site YAML (relative to its folder) or the bundled one."""
    if site.schema_file is None:
        return load_schema()
    path = Path(site.schema_file)
    if not path.is_absolute() and site_yaml is not None:
        path = Path(site_yaml).resolve().parent / path
    return load_schema(path)


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def _slide_patient(filename: str, ids: set[str]) -> str:
    """The patient id of `<pid>.<ext>`; the longest matching CSV id, so ids may contain dots."""
    matches = [pid for pid in ids if filename.startswith(pid + ".")]
    return max(matches, key=len) if matches else filename.split(".")[0]


def scan_site(
    site: SiteConfig,
    site_yaml: Path | None,
    problems: ProblemLog,
    schema: ClinicalSchema | None = None,
    outcomes_required: bool = True,
    wsi_dir: Path | None = None,
) -> SiteInventory:
    """Read clinical.csv and list the images; raises SiteUnusableError when the CSV is unusable.
    wsi_dir: list `<pid>.*` there instead of the layout's slide folder (pre-extracted features)."""
    root = site.root_dir(site_yaml)
    schema = schema or site_schema(site, site_yaml)
    table = read_clinical_csv(_under(root, site.layout.clinical_csv), schema, problems, outcomes_required)
    inputs: dict[str, PatientInputs] = {pid: PatientInputs() for pid in table.records}
    dropped: set[str] = set()

    for folder in _visible(_under(root, site.layout.mri_dir)):
        pid = folder.name
        if not folder.is_dir():
            continue
        if pid not in table.all_ids:
            problems.error("MRI folder without a row in the clinical table", folder, pid)
            continue
        if pid not in inputs:
            continue  # the row itself is bad and already reported
        try:
            inputs[pid].mri = find_mri_inputs(folder)
        except PatientDataError as err:
            drop_modality(problems, "mri", err, pid)
            dropped.add(pid)

    slides: dict[str, list[Path]] = {}
    for path in _visible(wsi_dir or _under(root, site.layout.wsi_dir)):
        pid = _slide_patient(path.name, table.all_ids)
        if pid not in table.all_ids:
            problems.error("slide without a row in the clinical table", path, pid)
        elif pid in inputs:
            slides.setdefault(pid, []).append(path)
    for pid, paths in slides.items():
        if len(paths) == 1:
            inputs[pid].wsi = paths[0]
        else:  # which one is the tumour's is not ours to guess
            names = ", ".join(p.name for p in paths)
            drop_modality(
                problems, "wsi", PatientDataError(f"{len(paths)} slides for one patient ({names})", str(paths[-1])), pid
            )
            dropped.add(pid)

    said = problems.excluded_patients() | dropped  # excluded, or its images left out: already reported
    for pid, found in inputs.items():
        if found.mri is None and found.wsi is None and pid not in said:
            problems.warning("no MRI folder and no slide: the patient is used with clinical data only", table.path, pid)
    return SiteInventory(site.name, root, schema, table, inputs)
