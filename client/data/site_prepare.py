"""Preprocess a whole site through the cache: every usable patient ends with cached tensors.

`prepare_site` is what the trainer, the Flower ClientApp and `sts-client validate` call first.
The first run decodes images (a process per core, progress bar); later runs and fresh processes only hash-check
(stat) the inputs and find the cached entries. An unusable MRI or slide drops that modality only:
the patient keeps its other modalities and its clinical data, and a warning `mri left out: ...` /
`wsi left out: ...` names the file and the reason. A bad clinical row (or images without a row)
excludes the patient (bad_patient_policy `skip`) or stops the site at once (`fail`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stsfl.client.data.clinical_encoding import site_clinical_sums
from stsfl.client.data.clinical_table import ClinicalRecord
from stsfl.client.data.preprocess_cache import PreprocessCache
from stsfl.client.data.preprocess_entries import EntryMaker, Job
from stsfl.client.problems import PatientDataError, Problem, ProblemLog, drop_modality
from stsfl.client.data.site_inventory import PatientInputs, SiteInventory, scan_site
from stsfl.common.clinical_stats import ClinicalSums
from stsfl.common.radiomics import RADIOMICS_FEATURES, radiomics_vector
from stsfl.common.config import ClinicalSchema, ConfigError, ModelPreset, SiteConfig
from stsfl.common.console import console


@dataclass
class PreparedPatient:
    """A usable patient: clinical record and the cache keys of its MRI / slide bag (None = absent);
    slide: the slide file its bag was tiled from (None: no bag, or pre-extracted features)."""

    record: ClinicalRecord
    mri_key: str | None
    wsi_key: str | None
    slide: Path | None = None

    @property
    def pid(self) -> str:
        return self.record.pid


@dataclass
class PreparedSite:
    """A preprocessed site: its usable patients (cached tensors) and every problem found."""

    name: str
    schema: ClinicalSchema
    preset: ModelPreset
    cache: PreprocessCache
    patients: list[PreparedPatient]
    problems: list[Problem]
    n_csv_rows: int
    encoder_fingerprint: str | None
    encoder_name: str | None = None
    wsi_feature_dims: list[int] = field(default_factory=list)  # widths of the slide embeddings found (the federation checks them)
    seconds: dict[str, float] = field(default_factory=dict)
    computed: dict[str, int] = field(default_factory=dict)

    def clinical_sums(self) -> ClinicalSums:
        """This site's aggregates for the federated clinical statistics (usable patients only)."""
        return site_clinical_sums((p.record for p in self.patients), self.schema)

    @property
    def excluded(self) -> set[str]:
        return {p.patient for p in self.problems if p.severity == "error" and p.patient}


def _site_folder(site: SiteConfig, site_yaml: Path | None, configured: Path | None, default: str) -> Path:
    """A folder the site YAML may set (relative to the YAML's folder), else <root>/.stsfl/<default>."""
    if configured is None:
        return site.root_dir(site_yaml) / ".stsfl" / default
    path = Path(configured)
    return path if path.is_absolute() or site_yaml is None else Path(site_yaml).resolve().parent / path


def site_cache_dir(site: SiteConfig, site_yaml: Path | None) -> Path:
    """`cache_dir` from the site YAML (relative to its folder), else <root>/.stsfl/cache."""
    return _site_folder(site, site_yaml, site.cache_dir, "cache")


def site_state_dir(site: SiteConfig, site_yaml: Path | None) -> Path:
    """Where the site keeps its own federation state (FedBN layers, privacy ledger): `cache_dir`
    (relative to the YAML's folder), else <root>/.stsfl."""
    return _site_folder(site, site_yaml, site.cache_dir, "")


def site_outputs_dir(site: SiteConfig, site_yaml: Path | None) -> Path:
    """`outputs_dir` from the site YAML (relative to its folder), else <root>/.stsfl/outputs."""
    return _site_folder(site, site_yaml, site.outputs_dir, "outputs")


MIN_PARALLEL_JOBS = 4  # below this, starting worker processes (importing torch) costs more than it saves


def _features_dir(site: SiteConfig, site_yaml: Path | None, preset: ModelPreset) -> Path | None:
    """The site's pre-extracted features folder when the preset's encoder is pre_extracted, else None."""
    if preset.preprocessing.wsi.encoder.arch != "pre_extracted":
        return None
    if site.wsi_features_dir is None:
        raise ConfigError(
            f"site {site.name}: the preset's slide encoder is pre_extracted "
            f"({preset.preprocessing.wsi.encoder.extractor}); set wsi_features_dir and wsi_features_extractor"
        )
    return _site_folder(site, site_yaml, site.wsi_features_dir, "")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_radiomics(record: ClinicalRecord, cache: PreprocessCache, mri_key: str, schema: ClinicalSchema) -> None:
    """The schema's `source: mri` variables of `record`, from its cached MRI entry."""
    try:
        values = cache.load("mri", mri_key, ["radiomics"])["radiomics"]
    except KeyError:  # an entry cached before the radiomics were: from its crop
        values = radiomics_vector(cache.load("mri", mri_key, ["volume"])["volume"])
    features = dict(zip(RADIOMICS_FEATURES, values.tolist()))
    record.values.update({v.name: features[v.name] for v in schema.mri_variables})


def _missing_entries(worker: EntryMaker, todo: list[tuple[str, PatientInputs]]) -> list[Job]:
    """The entries of these patients that are neither cached nor known to fail (decoding work)."""
    jobs: list[Job] = []
    for _, inputs in todo:
        for kind, source, key_of in (("mri", inputs.mri, worker.mri_key), ("wsi", inputs.wsi, worker.wsi_key)):
            if source is not None:
                key = key_of(source)
                if worker.missing(kind, key):
                    jobs.append((kind, key, source))
    return jobs


def prepare_site(
    site: SiteConfig,
    site_yaml: Path | None,
    preset: ModelPreset,
    *,
    schema: ClinicalSchema | None = None,
    policy: str | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    only: Collection[str] | None = None,
    outcomes_required: bool = True,
    workers: int | None = None,
) -> PreparedSite:
    """Scan, check and preprocess the site; `policy` overrides site.bad_patient_policy.

    Entries not yet cached are computed by `workers` processes (default: one per core) when there
    are at least MIN_PARALLEL_JOBS of them, with the same result as one process. For prediction:
    `only` preprocesses just these patients; `outcomes_required` False accepts a clinical table
    without endpoint columns."""
    start = time.perf_counter()
    problems = ProblemLog(policy or site.bad_patient_policy)
    features_dir = _features_dir(site, site_yaml, preset)
    inventory: SiteInventory = scan_site(site, site_yaml, problems, schema, outcomes_required, wsi_dir=features_dir)
    cache = PreprocessCache(cache_dir or site_cache_dir(site, site_yaml))
    wanted = {pid: inputs for pid, inputs in inventory.inputs.items() if only is None or pid in only}
    worker = EntryMaker(
        preset,
        cache,
        need_encoder=any(i.wsi for i in wanted.values()),
        extractor=site.wsi_features_extractor if features_dir else None,
    )
    patients: list[PreparedPatient] = []
    todo = [(pid, inputs) for pid, inputs in wanted.items() if pid not in problems.excluded_patients()]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
            jobs = _missing_entries(worker, todo)
            workers = min(workers or _cores(), len(jobs))
            if workers > 1 and len(jobs) >= MIN_PARALLEL_JOBS:
                task = bar.add_task(f"preprocessing site {site.name} ({workers} processes)", total=len(jobs))
                worker.fill(jobs, workers, lambda: bar.advance(task))
                bar.remove_task(task)
            task = bar.add_task(f"preprocessing site {site.name}", total=len(todo))
            for pid, inputs in todo:
                keys = {}
                for kind, present in (("mri", inputs.mri), ("wsi", inputs.wsi)):
                    if present is None:
                        continue
                    try:
                        keys[kind] = worker.mri(inputs.mri) if kind == "mri" else worker.wsi(inputs.wsi)
                    except PatientDataError as err:
                        drop_modality(problems, kind, err, pid)
                slide = inputs.wsi if "wsi" in keys and features_dir is None else None
                record = inventory.table.records[pid]
                if "mri" in keys and inventory.schema.mri_variables:
                    set_radiomics(record, cache, keys["mri"], inventory.schema)
                patients.append(PreparedPatient(record, keys.get("mri"), keys.get("wsi"), slide))
                bar.advance(task)
    finally:
        cache.hashes.save()
    seconds = dict(worker.seconds)
    seconds["total"] = time.perf_counter() - start
    return PreparedSite(
        name=site.name,
        schema=inventory.schema,
        preset=preset,
        cache=cache,
        patients=patients,
        problems=problems.problems,
        n_csv_rows=inventory.table.n_rows,
        encoder_fingerprint=worker.fingerprint,
        encoder_name=worker.encoder_name,
        wsi_feature_dims=sorted(worker.feature_dims),
        seconds=seconds,
        computed=dict(worker.computed),
    )
