"""The exported model: one zip file a site can predict with, without the federation running.

    <model>.stsfl.zip
        model.json     format + version, the stsfl version, the model preset (network sizes AND the
                       preprocessing settings, so new patients are preprocessed exactly as in
                       training), the clinical schema, the federation's global clinical statistics,
                       the baseline hazard document (pooled + per-site bins, risk histogram), the
                       prediction horizons, the patch encoder's weight fingerprint, provenance
        weights.npz    the network's state dict (numpy arrays)

`load_model_file(path, schema=...)` refuses a file of another format or a newer version, and a
schema that differs from the site's, naming what differs (variables, categories, endpoints).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from stsfl.common.atomic_file import atomic_path
from stsfl.common.baseline_hazard import BaselineBins, BaselineHazard
from stsfl.common.competing_risks import CompetingBaselines
from stsfl.common.config import ClinicalSchema, ModelPreset
from stsfl.common.console import UserError

FORMAT = "stsfl-model"
FORMAT_VERSION = 1
MANIFEST, WEIGHTS = "model.json", "weights.npz"


class ModelFileError(UserError):
    """The model file cannot be used here (unreadable, wrong format or version, other schema)."""


def stsfl_version() -> str:
    try:
        return version("stsfl")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class ExportedModel:
    """What a model file holds (see the module docstring)."""

    arrays: dict[str, np.ndarray]
    preset: ModelPreset
    schema: ClinicalSchema
    statistics: dict[str, Any]
    baseline: dict[str, Any]
    horizons_years: list[float]
    modalities: list[str]
    encoder_fingerprint: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    @property
    def endpoints(self) -> list[str]:
        return list(self.schema.endpoint_names)

    def baseline_hazard(self, endpoint: str, site: str | None = None) -> tuple[BaselineHazard, BaselineBins | None]:
        """The pooled baseline of `endpoint` with its bins, or a training site's own (stratified) one."""
        entry = self.baseline["endpoints"][endpoint]
        if site is None:
            return BaselineHazard.from_dict(entry["pooled"]), BaselineBins.from_dict(entry["bins"])
        if site not in entry.get("per_site_bins", {}):
            carried = ", ".join(entry.get("per_site_bins", {})) or "none (export with --site-baselines)"
            raise ModelFileError(f"no baseline hazard for site {site!r} in the model file; per-site baselines: {carried}")
        bins = BaselineBins.from_dict(entry["per_site_bins"][site])
        return BaselineHazard.from_bins(bins), bins

    def competing_baselines(self, endpoint: str, site: str | None = None) -> CompetingBaselines | None:
        """The cause-specific baselines of `endpoint` and of its competing event (pooled, or a training
        site's own), or None: the endpoint has no competing event, or the file predates them."""
        entry = self.baseline["endpoints"][endpoint].get("competing")
        if entry is None:
            return None
        event, event_bins = self.baseline_hazard(endpoint, site)
        if site is None:
            bins = BaselineBins.from_dict(entry["bins"])
        elif site in entry.get("per_site_bins", {}):
            bins = BaselineBins.from_dict(entry["per_site_bins"][site])
        else:
            raise ModelFileError(f"no competing-event baseline of {endpoint} for site {site!r} in the model file")
        return CompetingBaselines(entry["cause"], event, BaselineHazard.from_bins(bins), event_bins, bins)

    def risk_histogram(self, endpoint: str) -> np.ndarray:
        return np.asarray(self.baseline["endpoints"][endpoint]["risk_histogram"], float)


def save_model_file(path: str | Path, model: ExportedModel) -> Path:
    """Write the zip atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stsfl_version": stsfl_version(),
        "preset": model.preset.model_dump(mode="json"),
        "schema": model.schema.model_dump(mode="json"),
        "statistics": model.statistics,
        "baseline": model.baseline,
        "horizons_years": list(model.horizons_years),
        "modalities": list(model.modalities),
        "encoder_fingerprint": model.encoder_fingerprint,
        "source": model.source,
    }
    weights = io.BytesIO()
    np.savez(weights, **model.arrays)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=1))
        archive.writestr(WEIGHTS, weights.getvalue())
    return path


def schema_differences(expected: ClinicalSchema, found: ClinicalSchema) -> list[str]:
    """Human-readable differences between two schemas (empty when they are the same)."""
    out = []
    if expected.patient_id_column != found.patient_id_column:
        out.append(f"patient id column {found.patient_id_column!r} vs {expected.patient_id_column!r}")
    exp_vars = {v.name: v for v in expected.variables}
    got_vars = {v.name: v for v in found.variables}
    out += [f"variable {n!r} is not in the model's schema" for n in got_vars if n not in exp_vars]
    out += [f"variable {n!r} of the model's schema is missing" for n in exp_vars if n not in got_vars]
    for name in [n for n in exp_vars if n in got_vars]:
        a, b = exp_vars[name], got_vars[name]
        if a.kind != b.kind:
            out.append(f"variable {name!r}: kind {b.kind} vs the model's {a.kind}")
        elif a.categories != b.categories:
            out.append(f"variable {name!r}: categories {b.categories} vs the model's {a.categories}")
    if [v.name for v in expected.variables] != [v.name for v in found.variables] and not out:
        out.append("the variables are in a different order")
    if expected.endpoints != found.endpoints:
        out.append(
            f"endpoints {[e.name for e in found.endpoints]} vs the model's {[e.name for e in expected.endpoints]}"
            " (or their columns differ)"
        )
    return out


def load_model_file(path: str | Path, schema: ClinicalSchema | None = None) -> ExportedModel:
    """Read a model file; with `schema` (the site's), refuse a model trained with another schema."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST))
            with np.load(io.BytesIO(archive.read(WEIGHTS)), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found") from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as err:
        raise ModelFileError(f"{path}: not a readable stsfl model file ({err})") from None
    if manifest.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an stsfl model file (format {manifest.get('format')!r})")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format {manifest['format_version']} is newer than this stsfl "
            f"({stsfl_version()}) reads ({FORMAT_VERSION}); update stsfl"
        )
    model = ExportedModel(
        arrays=arrays,
        preset=ModelPreset.model_validate(manifest["preset"]),
        schema=ClinicalSchema.model_validate(manifest["schema"]),
        statistics=manifest["statistics"],
        baseline=manifest["baseline"],
        horizons_years=[float(h) for h in manifest["horizons_years"]],
        modalities=list(manifest["modalities"]),
        encoder_fingerprint=manifest.get("encoder_fingerprint"),
        source=manifest.get("source", {}),
        version=str(manifest.get("stsfl_version", "")),
    )
    if schema is not None:
        differences = schema_differences(model.schema, schema)
        if differences:
            raise ModelFileError(
                f"{path}: the model was trained with a different clinical schema than this site's:\n  " + "\n  ".join(differences)
            )
    return model
