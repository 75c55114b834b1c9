"""Preprocess a whole site through the cache: every usable patient ends with cached tensors.

`prepare_site` is what the trainer, the Flower ClientApp and `sts-client validate` call first.
The first run decodes images (progress bar); later runs and fresh processes only hash-check
(stat) the inputs and find the cached entries. An unusable MRI or slide drops that modality only:
the patient keeps its other modalities and its clinical data, and a warning `mri left out: ...` /
`wsi left out: ...` names the file and the reason. A bad clinical row (or images without a row)
excludes the patient (bad_patient_policy `skip`) or stops the site at once (`fail`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stsfl.common.clinical_stats import ClinicalSums
from stsfl.common.config import ClinicalSchema, ModelPreset, SiteConfig
from stsfl.common.console import console

from .clinical_encoding import site_clinical_sums
from .clinical_table import ClinicalRecord
from .mri_io import input_files
from .mri_preprocess import preprocess_mri
from .patch_encoder import PatchEncoder
from .preprocess_cache import PreprocessCache
from .problems import PatientDataError, Problem, ProblemLog, drop_modality
from .site_inventory import PatientInputs, SiteInventory, scan_site
from .wsi_bag import slide_bag


@dataclass
class PreparedPatient:
    """A usable patient: clinical record and the cache keys of its MRI / slide bag (None = absent)."""

    record: ClinicalRecord
    mri_key: str | None
    wsi_key: str | None

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


class _Preprocessor:
    """Cache-or-compute of one patient's MRI and slide bag."""

    def __init__(self, preset: ModelPreset, cache: PreprocessCache, need_encoder: bool):
        self.preset = preset
        self.cache = cache
        pre = preset.preprocessing
        self.mri_settings = {"mri": pre.mri.model_dump(mode="json"), "size": list(preset.mri.input_size)}
        self.encoder = PatchEncoder(pre.wsi, preset.wsi.embed_dim) if need_encoder else None
        wsi = pre.wsi.model_dump(mode="json")
        wsi["encoder"].pop("batch_size")  # batching does not change the embedding
        self.wsi_settings = {"wsi": wsi, "embed_dim": preset.wsi.embed_dim, "weights": self.encoder and self.encoder.fingerprint}
        self.seconds: dict[str, float] = defaultdict(float)
        self.computed: dict[str, int] = defaultdict(int)

    def _cached(self, kind: str, key: str, compute, file: Path) -> None:
        """Compute and store the entry unless it (or a cached failure) exists; raise PatientDataError."""
        failure = self.cache.load_failure(kind, key)
        if failure is not None:
            raise PatientDataError(failure["reason"], failure.get("file"), failure.get("column"))
        if self.cache.entry_path(kind, key).exists():
            return
        try:
            arrays = compute()
        except PatientDataError as err:
            self.cache.store_failure(kind, key, {"reason": err.reason, "file": err.file, "column": err.column})
            self.computed[f"{kind}_failed"] += 1
            raise
        except Exception as err:  # one bad patient never crashes a site; not cached (may be transient)
            raise PatientDataError(f"unexpected {type(err).__name__}: {err}", str(file)) from err
        self.cache.store(kind, key, arrays)
        self.computed[kind] += 1

    def mri(self, inputs: PatientInputs) -> str:
        paths = inputs.mri
        labelled = [(role, f) for role, p in zip(("t1", "t2", "mask"), paths.all()) for f in input_files(p)]
        key = self.cache.key("mri", self.mri_settings, labelled)

        def compute() -> dict[str, np.ndarray]:
            result = preprocess_mri(paths, self.preset.preprocessing.mri, self.preset.mri.input_size)
            for step, sec in result.seconds.items():
                self.seconds[f"mri_{step}"] += sec
            return {"volume": result.volume, "mask": result.mask}

        self._cached("mri", key, compute, paths.t1.parent)
        return key

    def wsi(self, path: Path) -> str:
        key = self.cache.key("wsi", self.wsi_settings, [("slide", path)])

        def compute() -> dict[str, np.ndarray]:
            result = slide_bag(path, self.preset.preprocessing.wsi, self.encoder)
            for step, sec in result.seconds.items():
                self.seconds[f"wsi_{step}"] += sec
            self.computed["wsi_tiles"] += len(result.bag)
            return {"bag": result.bag, "coords": result.coords, "n_tissue_tiles": np.asarray(result.n_tissue_tiles)}

        self._cached("wsi", key, compute, path)
        return key


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
) -> PreparedSite:
    """Scan, check and preprocess the site; `policy` overrides site.bad_patient_policy.

    For prediction: `only` preprocesses just these patients; `outcomes_required` False accepts a
    clinical table without endpoint columns."""
    start = time.perf_counter()
    problems = ProblemLog(policy or site.bad_patient_policy)
    inventory: SiteInventory = scan_site(site, site_yaml, problems, schema, outcomes_required)
    cache = PreprocessCache(cache_dir or site_cache_dir(site, site_yaml))
    wanted = {pid: inputs for pid, inputs in inventory.inputs.items() if only is None or pid in only}
    worker = _Preprocessor(preset, cache, need_encoder=any(i.wsi for i in wanted.values()))
    patients: list[PreparedPatient] = []
    todo = [(pid, inputs) for pid, inputs in wanted.items() if pid not in problems.excluded_patients()]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
            task = bar.add_task(f"preprocessing site {site.name}", total=len(todo))
            for pid, inputs in todo:
                keys = {}
                for kind, present in (("mri", inputs.mri), ("wsi", inputs.wsi)):
                    if present is None:
                        continue
                    try:
                        keys[kind] = worker.mri(inputs) if kind == "mri" else worker.wsi(inputs.wsi)
                    except PatientDataError as err:
                        drop_modality(problems, kind, err, pid)
                patients.append(PreparedPatient(inventory.table.records[pid], keys.get("mri"), keys.get("wsi")))
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
        encoder_fingerprint=worker.encoder.fingerprint if worker.encoder else None,
        seconds=seconds,
        computed=dict(worker.computed),
    )
