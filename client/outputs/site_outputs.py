"""The site-outputs query, last after the federation's final round: what a run leaves at the site for
the site's own people (its clinicians and IT team). Nothing of it is sent anywhere.

    <outputs_dir>/<federation>/
        risk_scores.csv                 one row per usable patient (see `write_risk_scores`)
        gradcam/<pid>_gradcam.png       Grad-CAM overlays of every patient with an MRI (multimodal task)
        validation_report.html, .txt    what `sts-client validate` prints, and problems.csv (multimodal task)

`outputs_dir` is the site YAML's key (default <root>/.stsfl/outputs). The reply to the server holds
counts only (patients scored, overlays written, problems listed).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stsfl.common.absolute_risk import N_BOOT, predict_absolute
from stsfl.common.atomic_file import atomic_path
from stsfl.common.baseline_hazard import DAYS_PER_YEAR, BaselineBins, BaselineHazard
from stsfl.common.competing_risks import CompetingBaselines, predict_incidence

RISK_SCORES = "risk_scores.csv"
GRADCAM_DIR = "gradcam"
# The split a patient was in: the training site's two splits, a tabular site's test fold, a held-out centre.
SPLITS = ("train", "validation", "test", "external")


@dataclass
class PatientRisks:
    """The site's usable patients with the fused head's log-risk [N, K] in `endpoints` order, the
    split each was in (one of SPLITS) and the modalities it had (e.g. "mri+wsi+clinical")."""

    pids: list[str]
    splits: list[str]
    modalities: list[str]
    endpoints: list[str]
    log_risk: np.ndarray


def horizon_label(days: float) -> str:
    """Column suffix of a horizon, in years: 1826.25 -> '5y'."""
    return f"{days / DAYS_PER_YEAR:.3g}y"


def _incidence_columns(
    risks: PatientRisks,
    k: int,
    entry: dict,
    hazard: BaselineHazard,
    bins: BaselineBins | None,
    horizons: Sequence[float],
    seed: int,
) -> tuple[list[str], list[np.ndarray]]:
    """`<e>_cif_<h>y` with `_low`, `_high` of endpoint k, whose competing event's pooled baseline is `entry`."""
    endpoint, cause = risks.endpoints[k], risks.endpoints.index(entry["cause"])
    baselines = CompetingBaselines(
        entry["cause"], hazard, BaselineHazard.from_dict(entry["pooled"]), bins, BaselineBins.from_dict(entry["bins"])
    )
    incidence = predict_incidence(
        risks.log_risk[:, k],
        risks.log_risk[:, cause],
        baselines,
        horizons,
        times=np.asarray(horizons, float),
        n_boot=N_BOOT,
        seed=seed,
    )
    header, columns = [], []
    for j, days in enumerate(horizons):
        name = f"{endpoint}_cif_{horizon_label(days)}"
        header += [name, f"{name}_low", f"{name}_high"]
        columns += [incidence.risk[:, j], incidence.risk_low[:, j], incidence.risk_high[:, j]]
    return header, columns


def write_risk_scores(
    path: Path,
    risks: PatientRisks,
    hazards: dict[str, dict],
    bins: dict[str, dict],
    horizons_days: Sequence[float],
    seed: int = 0,
    competing: dict[str, dict] | None = None,
) -> int:
    """risk_scores.csv: pid, split, modalities, then per endpoint `<e>_log_risk` and, where the
    pooled baseline hazard of the endpoint is known (`hazards`: BaselineHazard dicts), the absolute
    risk `<e>_risk_<h>y` (1 - S: for an endpoint with a competing event, the risk in a world without
    it) at each horizon with its 95 % Poisson-bootstrap interval (`_low`, `_high`) from the pooled
    bins; for an endpoint whose competing event's pooled baseline is in `competing` ({endpoint:
    {"cause", "pooled", "bins"}}), the crude cumulative incidence `<e>_cif_<h>y` likewise.
    Written atomically; returns the number of patients."""
    header = ["pid", "split", "modalities"]
    columns: list[Sequence] = [risks.pids, risks.splits, risks.modalities]
    for k, endpoint in enumerate(risks.endpoints):
        eta = np.asarray(risks.log_risk[:, k], float)
        header.append(f"{endpoint}_log_risk")
        columns.append(eta)
        if endpoint not in hazards or not len(horizons_days):
            continue
        pooled_bins = BaselineBins.from_dict(bins[endpoint]) if endpoint in bins else None
        absolute = predict_absolute(
            eta,
            BaselineHazard.from_dict(hazards[endpoint]),
            horizons_days,
            bins=pooled_bins,
            times=np.asarray(horizons_days, float),
            n_boot=N_BOOT,
            seed=seed,
        )
        for j, days in enumerate(horizons_days):
            name = f"{endpoint}_risk_{horizon_label(days)}"
            header += [name, f"{name}_low", f"{name}_high"]
            columns += [absolute.risk[:, j], absolute.risk_low[:, j], absolute.risk_high[:, j]]
        if competing and endpoint in competing:
            hazard = BaselineHazard.from_dict(hazards[endpoint])
            more = _incidence_columns(risks, k, competing[endpoint], hazard, pooled_bins, horizons_days, seed)
            header, columns = header + more[0], columns + more[1]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in zip(*columns):
            writer.writerow([f"{v:.6g}" if isinstance(v, (float, np.floating)) else v for v in row])
    return len(risks.pids)
