"""`sts-server export`: a finished federation's results folder -> one model file for the sites.

Takes the selected global model (model_selected.npz: the one the baseline hazard was computed
for), the federation's preset (network and preprocessing), clinical schema, global statistics
(statistics.json) and baseline hazard (baseline_hazard.json) and writes them with
`stsfl.common.model_file.save_model_file`. Only the `multimodal` task is exported. With FedBN the
normalisation layers stay at the sites, so the exported global model would lack them: refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stsfl.common.batch import MODALITIES
from stsfl.common.config import FederationConfig, load_config, load_preset
from stsfl.common.console import UserError
from stsfl.common.model_file import ExportedModel, save_model_file
from stsfl.server.phases.baseline_phase import BASELINE_FILE
from stsfl.tasks.multimodal.server import MultimodalServer


def _read(results: Path, name: str) -> Path:
    path = results / name
    if not path.is_file():
        raise UserError(f"{path} not found: export needs a finished federation run (with the baseline phase)")
    return path


def without_site_baselines(baseline: dict) -> dict:
    """The baseline document without the per-site bins and baselines: the model file goes to every
    site, and one site's monthly event counts are not another site's business (nor its counts of
    competing events: the `competing` entries lose theirs too)."""

    def pooled_only(entry: dict) -> dict:
        kept = {k: v for k, v in entry.items() if k not in ("per_site", "per_site_bins")}
        if "competing" in kept:
            kept["competing"] = pooled_only(kept["competing"])
        return kept

    return {**baseline, "endpoints": {name: pooled_only(entry) for name, entry in baseline["endpoints"].items()}}


def export_from_results(results_dir: Path, out: Path, site_baselines: bool = False) -> Path:
    """The model file of a finished run; `site_baselines` also carries every training site's own
    (stratified) baseline hazard and bins."""
    results = Path(results_dir)
    fed = load_config(_read(results, "federation.yaml"), FederationConfig)
    if fed.task != "multimodal":
        raise UserError(f"{results}: task {fed.task!r}; only multimodal models are exported")
    if fed.strategy == "fedbn":
        raise UserError(f"{results}: FedBN keeps normalisation layers at the sites; the global model cannot be exported")
    baseline = json.loads(_read(results, BASELINE_FILE).read_text(encoding="utf-8"))
    statistics = json.loads(_read(results, "statistics.json").read_text(encoding="utf-8"))["global"]
    with np.load(_read(results, "model_selected.npz"), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    fingerprints = {f for f in baseline.get("encoder_fingerprints", {}).values() if f}
    if len(fingerprints) > 1:
        raise UserError(f"{results}: the sites used different slide encoder weights ({sorted(fingerprints)})")
    model = ExportedModel(
        arrays=arrays,
        preset=load_preset(fed.preset, fed.model_norm),
        schema=MultimodalServer(fed).schema,
        statistics=statistics,
        baseline=baseline if site_baselines else without_site_baselines(baseline),
        horizons_years=list(fed.prediction.horizons_years),
        modalities=list(MODALITIES),
        encoder_fingerprint=next(iter(fingerprints), None),
        source={
            "federation": fed.name,
            "results": str(results.resolve()),
            "round": baseline["model_round"],
            "training_sites": fed.training_sites,
            "holdout_sites": fed.holdout,
        },
    )
    return save_model_file(out, model)
