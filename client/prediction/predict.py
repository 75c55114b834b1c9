"""`sts-client predict`: absolute risks for patients of this site, or new patients, from a model file.

    predict_patients(model_file, site_yaml, out_dir, pids=[...])           patients of the site
    predict_patients(model_file, site_yaml, out_dir, patients_dir=DIR)     new patients: DIR holds
        clinical.csv (outcome columns optional) and mri/<pid>/, wsi/<pid>.* as in the site contract

Preprocessing is the model file's preset (exactly the training settings), through the site's
content-keyed cache; the clinical vector is encoded with the federation's global statistics.
An unusable MRI or slide leaves that modality out (the network's presence flags are built for
this) and the page says so; an unusable clinical row is an error naming the patient and column.
Per patient and endpoint: the fused log-risk, risks at the horizons with Poisson-bootstrap
intervals of the baseline hazard (stsfl.common.absolute_risk), the risk percentile among the
federation's training patients, Grad-CAM of the MRI branch and the slide's most-attended tiles.
An endpoint with a competing event (dm, lr: death competes) also gets its crude cumulative
incidence (stsfl.common.competing_risks), the risk the patient actually faces; 1 - S stays beside
it as the risk in a world without the competing event.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stsfl.client.data.site_dataset import SiteDataset, site_collate
from stsfl.client.data.site_inventory import site_schema
from stsfl.client.data.site_prepare import PreparedSite, prepare_site, site_cache_dir
from stsfl.client.prediction.patient_prediction import EndpointPrediction, PatientPrediction
from stsfl.client.prediction.recalibration import model_from_entry
from stsfl.common.absolute_risk import N_BOOT, group_survival, horizons_in_days, predict_absolute
from stsfl.common.baseline_hazard import BaselineBins, BaselineHazard
from stsfl.common.batch import MODALITIES, SurvivalBatch
from stsfl.common.clinical_features import clinical_dim
from stsfl.common.clinical_stats import GlobalClinicalStats
from stsfl.common.competing_risks import CompetingBaselines, predict_incidence
from stsfl.common.config import SiteConfig, load_config
from stsfl.common.console import UserError
from stsfl.common.model_file import ExportedModel, ModelFileError, load_model_file
from stsfl.common.risk_histogram import centres, percentile_of, risk_halves
from stsfl.tasks.multimodal.model import FUSED, MultimodalCoxNet

TOP_TILES = 8


def build_network(model: ExportedModel) -> MultimodalCoxNet:
    """The exported network in eval mode (strict load: a file from another preset fails here)."""
    net = MultimodalCoxNet(model.preset, clinical_dim(model.schema), len(model.endpoints), model.modalities)
    try:
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.arrays.items()})
    except RuntimeError as err:
        raise ModelFileError(f"the model file's weights do not fit its preset {model.preset.name!r}: {err}") from None
    return net.eval()


def _target_site(site: SiteConfig, site_yaml: Path, patients_dir: Path | None) -> tuple[SiteConfig, Path | None]:
    """The site itself, or a site over a folder of new patients sharing the site's cache and schema."""
    if patients_dir is None:
        return site, site_yaml
    if not (patients_dir / "clinical.csv").is_file():
        raise UserError(f"{patients_dir}: no clinical.csv (new patients: clinical.csv, mri/<pid>/, wsi/<pid>.*)")
    schema_file = site.schema_file
    if schema_file is not None and not schema_file.is_absolute():
        schema_file = site_yaml.resolve().parent / schema_file
    new = SiteConfig(
        name=f"{site.name}-new",
        root=patients_dir.resolve(),
        schema_file=schema_file,
        bad_patient_policy="skip",
        cache_dir=site_cache_dir(site, site_yaml),
    )
    return new, None


def _prepare(model: ExportedModel, site: SiteConfig, site_yaml: Path | None, pids: list[str] | None) -> PreparedSite:
    prepared = prepare_site(site, site_yaml, model.preset, schema=model.schema, policy="skip", only=pids, outcomes_required=False)
    if model.encoder_fingerprint and prepared.encoder_fingerprint and model.encoder_fingerprint != prepared.encoder_fingerprint:
        raise ModelFileError(
            f"this site's slide encoder weights ({prepared.encoder_fingerprint}) differ from the model's "
            f"({model.encoder_fingerprint}): check preprocessing.wsi.encoder.checkpoint"
        )
    usable = {p.pid for p in prepared.patients}
    for pid in pids or []:
        if pid not in usable:
            reasons = [p.describe() for p in prepared.problems if p.patient == pid and p.severity == "error"]
            raise UserError(f"patient {pid} cannot be predicted: " + ("; ".join(reasons) or "not in the clinical table"))
    return prepared


def _patient_notes(prepared: PreparedSite, pid: str, present: list[bool]) -> tuple[list[str], list[str], list[str]]:
    """(modalities used, modalities missing with the reason, warnings) of one patient."""
    problems = [p for p in prepared.problems if p.patient == pid]
    used = [m for m, here in zip(MODALITIES, present) if here]
    missing = []
    for m, here in zip(MODALITIES, present):
        if not here:
            why = [p.reason for p in problems if p.reason.startswith(f"{m} left out")]
            missing.append(
                f"{m}: " + (why[0].removeprefix(f"{m} left out: ") + " (unusable, left out)" if why else "not available")
            )
    return used, missing, [p.describe() for p in problems]


def _slide_path(prepared_root: Path, site: SiteConfig, pid: str) -> Path | None:
    folder = Path(site.layout.wsi_dir)
    folder = folder if folder.is_absolute() else prepared_root / folder
    found = sorted(folder.glob(f"{pid}.*")) if folder.is_dir() else []
    return found[0] if found else None


def read_recalibration(path: Path, model: ExportedModel) -> dict:
    """The endpoints of a recalibration.json made for this model file's grid; a clear error otherwise."""
    import json

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        endpoints = document["endpoints"]
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{path}: not a recalibration file of `sts-client recalibrate` ({err})") from None
    if document.get("grid") != model.baseline["grid"]:
        raise UserError(
            f"{path}: made on another time grid than the model file's ({document.get('grid')} vs {model.baseline['grid']})"
        )
    unknown = sorted(set(endpoints) - set(model.endpoints))
    if unknown:
        raise UserError(f"{path}: endpoints {unknown} are not the model's ({model.endpoints})")
    return endpoints


def _baselines(
    model: ExportedModel, k: int, log_risk: np.ndarray, baseline_site: str | None, recalibration: dict | None
) -> tuple[float, BaselineHazard, BaselineBins | None, CompetingBaselines | None, float]:
    """(log-risk, baseline, bins, competing baselines or None, competing log-risk) of endpoint k: the
    model file's (pooled, or a training site's), or this site's own recalibration (slopes applied)."""
    name = model.endpoints[k]
    entry = (recalibration or {}).get(name)
    if entry is None:
        hazard, bins = model.baseline_hazard(name, baseline_site)
        competing = model.competing_baselines(name, baseline_site)
        cause = 0.0 if competing is None else float(log_risk[model.endpoints.index(competing.cause)])
        return float(log_risk[k]), hazard, bins, competing, cause
    recalibrated = model_from_entry(entry)
    bins = BaselineBins.from_dict(entry["bins"])
    if "competing" not in entry:
        return recalibrated.slope * float(log_risk[k]), recalibrated.hazard, bins, None, 0.0
    c = entry["competing"]
    c_bins = BaselineBins.from_dict(c["bins"])
    competing = CompetingBaselines(c["cause"], recalibrated.hazard, BaselineHazard.from_bins(c_bins), bins, c_bins)
    cause = float(c["slope"]) * float(log_risk[model.endpoints.index(c["cause"])])
    return recalibrated.slope * float(log_risk[k]), recalibrated.hazard, bins, competing, cause


def endpoint_prediction(
    model: ExportedModel,
    k: int,
    log_risk: np.ndarray,
    baseline_site: str | None,
    horizons: np.ndarray,
    times: np.ndarray,
    seed: int,
    recalibration: dict | None = None,
) -> EndpointPrediction:
    """Endpoint k of one patient with log-risks [K]: 1 - S, and the crude cumulative incidence when
    the endpoint has a competing event and the model file (or the recalibration) carries its baseline.
    The percentile and the cohort's reference curves stay those of the federation's training patients."""
    endpoint = model.schema.endpoints[k]
    eta, hazard, bins, competing, eta_cause = _baselines(model, k, log_risk, baseline_site, recalibration)
    absolute = predict_absolute(np.array([eta]), hazard, horizons, bins=bins, times=times, n_boot=N_BOOT, seed=seed)
    histogram = model.risk_histogram(endpoint.name)
    low, high = risk_halves(histogram)
    pooled, _ = model.baseline_hazard(endpoint.name, baseline_site)
    prediction = EndpointPrediction(
        endpoint.name,
        endpoint.label,
        float(log_risk[k]),
        absolute,
        percentile_of(float(log_risk[k]), histogram),
        group_survival(pooled, centres(), low, times),
        group_survival(pooled, centres(), high, times),
    )
    if competing is not None:
        prediction.incidence = predict_incidence(
            np.array([eta]), np.array([eta_cause]), competing, horizons, times=times, n_boot=N_BOOT, seed=seed
        )
        prediction.competing_label = model.schema.endpoints[model.endpoints.index(competing.cause)].label
    return prediction


def predict_patients(
    model_file: Path,
    site_yaml: Path,
    out_dir: Path,
    pids: list[str] | None = None,
    patients_dir: Path | None = None,
    baseline_site: str | None = None,
    seed: int = 0,
    recalibration: Path | None = None,
) -> list[PatientPrediction]:
    """Predict, write one HTML page per patient and predictions.csv into `out_dir`; returns the
    predictions. `recalibration`: this site's recalibration.json (`sts-client recalibrate`), whose
    baselines and slopes replace the model file's."""
    from stsfl.client.outputs.gradcam import cached_tumour_masks, mri_gradcam, save_overlay
    from stsfl.client.prediction.patient_report import save_attended_tiles, save_survival_figure, write_csv, write_patient_page

    site_yaml = Path(site_yaml)
    site = load_config(site_yaml, SiteConfig)
    model = load_model_file(model_file, schema=site_schema(site, site_yaml))
    target, target_yaml = _target_site(site, site_yaml, Path(patients_dir) if patients_dir else None)
    prepared = _prepare(model, target, target_yaml, pids)
    pids = pids or [p.pid for p in prepared.patients]
    if not pids:
        raise UserError(f"{target.root_dir(target_yaml)}: no patient to predict")
    net = build_network(model)
    recalibrated = read_recalibration(recalibration, model) if recalibration else None
    dataset = SiteDataset(prepared, GlobalClinicalStats.from_dict(model.statistics), pids=pids, seed=seed)
    collate = site_collate(model.preset)
    horizons = horizons_in_days(model.horizons_years)
    times = np.linspace(0.0, horizons.max() * 1.2, 121)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = target.root_dir(target_yaml)
    by_pid = {p.pid: p for p in prepared.patients}
    predictions = []
    for index, pid in enumerate(pids):
        batch: SurvivalBatch = collate([dataset[index]])
        with torch.no_grad():
            log_risk = net(batch)[FUSED][0].numpy()
        present = batch.modality_present[0].tolist()
        used, missing, warnings = _patient_notes(prepared, pid, present)
        endpoints = [
            endpoint_prediction(model, k, log_risk, baseline_site, horizons, times, seed, recalibrated)
            for k in range(len(model.endpoints))
        ]
        prediction = PatientPrediction(pid, used, missing, warnings, endpoints)
        prediction.figures["survival"] = save_survival_figure(prediction, out_dir / f"{pid}_survival.png")
        if present[0] and "mri" in model.modalities:
            cam = mri_gradcam(net, batch, endpoint=0)[0]
            mask = cached_tumour_masks(prepared, [pid]).get(pid)
            prediction.figures["gradcam"], _ = save_overlay(
                batch.mri[0, 1].numpy(),
                cam,
                mask,
                out_dir / f"{pid}_gradcam.png",
                f"{pid}: Grad-CAM of {model.schema.endpoints[0].label}",
            )
        slide = _slide_path(root, target, pid) if present[1] and "wsi" in model.modalities else None
        if slide is not None:
            with torch.no_grad():
                weights, _ = net.encoders["wsi"].attention(batch.wsi, batch.wsi_mask)
            entry = prepared.cache.load("wsi", by_pid[pid].wsi_key, ["coords"])
            prediction.figures["tiles"] = save_attended_tiles(
                slide, entry["coords"], weights[0].numpy(), model.preset, out_dir / f"{pid}_tiles.png", TOP_TILES
            )
        write_patient_page(prediction, model, out_dir / f"{pid}.html")
        predictions.append(prediction)
    write_csv(predictions, model, out_dir / "predictions.csv")
    return predictions
