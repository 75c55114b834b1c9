"""Preprocess a whole site through the cache: every usable patient ends with cached tensors.

`prepare_site` is what the trainer, the Flower ClientApp and `sts-client validate` call first.
The first run decodes images (progress bar); later runs and fresh processes only hash-check
(stat) the inputs and find the cached entries. An unusable MRI or slide drops that modality only:
the patient keeps its other modalities and its clinical data, and a warning `mri left out: ...` /
`wsi left out: ...` names the file and the reason. A bad clinical row (or images without a row)
excludes the patient (bad_patient_policy `skip`) or stops the site at once (`fail`).
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stsfl.common.clinical_stats import ClinicalSums
from stsfl.common.config import ClinicalSchema, ConfigError, ModelPreset, SiteConfig
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
from .wsi_features import read_features
from .wsi_tiles import sample_tiles


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


class _Preprocessor:
    """Cache-or-compute of one patient's MRI and slide bag (encoded tiles, or the site's
    pre-extracted features made by `extractor` when the preset's encoder is pre_extracted)."""

    def __init__(self, preset: ModelPreset, cache: PreprocessCache, need_encoder: bool, extractor: str | None):
        self.preset = preset
        self.cache = cache
        pre = preset.preprocessing
        self.mri_settings = {"mri": pre.mri.model_dump(mode="json"), "size": list(preset.mri.input_size)}
        self.extractor = extractor
        self.encoder = PatchEncoder(pre.wsi, preset.wsi.embed_dim) if need_encoder and extractor is None else None
        if self.encoder is not None:
            self.encoder_name, self.fingerprint = self.encoder.name, self.encoder.fingerprint
        elif need_encoder:
            self.encoder_name = extractor
            self.fingerprint = hashlib.sha256(f"pre_extracted:{extractor}".encode()).hexdigest()[:16]
        else:
            self.encoder_name = self.fingerprint = None
        wsi = pre.wsi.model_dump(mode="json")
        wsi["encoder"].pop("batch_size")  # batching does not change the embedding
        self.wsi_settings = {"wsi": wsi, "embed_dim": preset.wsi.embed_dim, "weights": self.fingerprint}
        self.feature_dims: set[int] = set()
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
        key = self.features(path) if self.extractor else self.slide(path)
        self.feature_dims.add(self.preset.wsi.embed_dim)
        return key

    def slide(self, path: Path) -> str:
        key = self.cache.key("wsi", self.wsi_settings, [("slide", path)])

        def compute() -> dict[str, np.ndarray]:
            result = slide_bag(path, self.preset.preprocessing.wsi, self.encoder)
            for step, sec in result.seconds.items():
                self.seconds[f"wsi_{step}"] += sec
            self.computed["wsi_tiles"] += len(result.bag)
            return {"bag": result.bag, "coords": result.coords, "n_tissue_tiles": np.asarray(result.n_tissue_tiles)}

        self._cached("wsi", key, compute, path)
        return key

    def features(self, path: Path) -> str:
        """A pre-extracted features file, capped at max_tiles rows like a slide's tiles."""
        key = self.cache.key("wsi", self.wsi_settings, [("features", path)])
        cfg = self.preset.preprocessing.wsi

        def compute() -> dict[str, np.ndarray]:
            bag, coords = read_features(path, self.extractor)
            rows = sample_tiles(np.arange(len(bag)).reshape(-1, 1), cfg.max_tiles, cfg.sampling_seed)[:, 0]
            return {"bag": bag[rows], "coords": coords[rows], "n_tissue_tiles": np.asarray(len(bag))}

        self._cached("wsi", key, compute, path)
        width = self.cache.load("wsi", key, ["bag"])["bag"].shape[1]
        if width != self.preset.wsi.embed_dim:
            self.feature_dims.add(width)
            raise PatientDataError(f"features of dimension {width}, the federation's wsi.embed_dim is "
                                   f"{self.preset.wsi.embed_dim}", str(path))
        return key


def _features_dir(site: SiteConfig, site_yaml: Path | None, preset: ModelPreset) -> Path | None:
    """The site's pre-extracted features folder when the preset's encoder is pre_extracted, else None."""
    if preset.preprocessing.wsi.encoder.arch != "pre_extracted":
        return None
    if site.wsi_features_dir is None:
        raise ConfigError(f"site {site.name}: the preset's slide encoder is pre_extracted "
                          f"({preset.preprocessing.wsi.encoder.extractor}); set wsi_features_dir and wsi_features_extractor")
    return _site_folder(site, site_yaml, site.wsi_features_dir, "")


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
    features_dir = _features_dir(site, site_yaml, preset)
    inventory: SiteInventory = scan_site(site, site_yaml, problems, schema, outcomes_required, wsi_dir=features_dir)
    cache = PreprocessCache(cache_dir or site_cache_dir(site, site_yaml))
    wanted = {pid: inputs for pid, inputs in inventory.inputs.items() if only is None or pid in only}
    worker = _Preprocessor(preset, cache, need_encoder=any(i.wsi for i in wanted.values()),
                           extractor=site.wsi_features_extractor if features_dir else None)
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
        encoder_fingerprint=worker.fingerprint,
        encoder_name=worker.encoder_name,
        wsi_feature_dims=sorted(worker.feature_dims),
        seconds=seconds,
        computed=dict(worker.computed),
    )
