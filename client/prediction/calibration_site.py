"""A site's answer to the calibration query (after the baseline hazard is known).

On its evaluation patients (a held-out centre: all; a training site: its validation split), per
endpoint and horizon: the risk-decile calibration curve (patients, mean predicted and
Kaplan-Meier observed risk per decile), Crowson's calibration intercept and slope with the
observed and expected event counts, and the decision curve (net benefit of the model and of
treat-all per threshold). An endpoint with a competing event also gets, per horizon, the
calibration of its crude cumulative incidence against Aalen-Johansen (`incidence`, see
stsfl.client.prediction.incidence_site). Group-level aggregates only: no patient's risk or time leaves the site.
"""

from __future__ import annotations

import numpy as np

from stsfl.client.prediction.baseline_site import SiteRisks
from stsfl.client.prediction.incidence_site import incidence_entry
from stsfl.common.baseline_hazard import BaselineBins, BaselineHazard
from stsfl.common.calibration import calibration_groups, calibration_intercept_slope, decision_curve
from stsfl.common.competing_risks import CompetingBaselines
from stsfl.common.risk_group_km import MIN_GROUP_SIZE

MIN_PATIENTS = 10  # fewer evaluation patients: no calibration curve
# Fewer events before the horizon: the Crowson slope and intercept are not estimable (a held-out
# centre with a handful of events gave a slope of 403.59), so the horizon is skipped, saying so.
MIN_EVENTS = 10
DECILES = 10


def calibration_reply(
    risks: SiteRisks,
    hazards: dict[str, BaselineHazard],
    horizons_days: list[float],
    competing: dict[str, CompetingBaselines] | None = None,
) -> dict:
    """{"endpoints": {name: {"<h>": {"groups", "intercept", "slope", "observed", "expected",
    "decision"[, "incidence"]} or {"skipped": reason}}}, "patients": N}; `competing`: the two
    cause-specific baselines of the endpoints with a competing event (their `incidence`)."""
    out: dict = {}
    for k, endpoint in enumerate(risks.endpoints):
        if endpoint not in hazards:
            continue
        seen = np.asarray(risks.observed[:, k], bool)
        time, event, eta = risks.time[seen, k], risks.event[seen, k], risks.log_risk[seen, k]
        hazard = hazards[endpoint]
        per_horizon = {}
        for horizon in horizons_days:
            key = f"{horizon:g}"
            if len(time) < MIN_PATIENTS:
                per_horizon[key] = {"skipped": f"{len(time)} evaluation patients (< {MIN_PATIENTS})"}
                continue
            risk = 1.0 - hazard.survival(eta, np.array([horizon]))[:, 0]
            try:
                fit = calibration_intercept_slope(eta, hazard.at, time, event, horizon)
            except ValueError as err:
                per_horizon[key] = {"skipped": str(err)}
                continue
            if fit.observed < MIN_EVENTS:
                per_horizon[key] = {
                    "skipped": f"{fit.observed:.0f} events before the horizon (< {MIN_EVENTS}): too few to estimate calibration"
                }
                continue
            # Small-cell suppression: deciles of fewer than MIN_GROUP_SIZE patients would show single
            # patients' risks and outcomes, so small sites report fewer, larger groups.
            groups = calibration_groups(risk, time, event, horizon, groups=min(DECILES, len(time) // MIN_GROUP_SIZE))
            curve = decision_curve(risk, time, event, horizon)
            per_horizon[key] = {
                "groups": {"n": groups.n.tolist(), "predicted": groups.predicted.tolist(), "observed": groups.observed.tolist()},
                "intercept": fit.intercept,
                "slope": fit.slope,
                "observed": fit.observed,
                "expected": fit.expected,
                "decision": {
                    "thresholds": curve.thresholds.tolist(),
                    "model": curve.model.tolist(),
                    "treat_all": curve.treat_all.tolist(),
                },
            }
            arrays = risks.competing_arrays(k)
            if competing and endpoint in competing and arrays is not None:
                per_horizon[key]["incidence"] = incidence_entry(arrays, competing[endpoint], horizon)
        out[endpoint] = per_horizon
    return {"endpoints": out, "patients": int(len(risks.time))}


def skipped_reply(endpoints: list[str], horizons_days: list[float], reason: str) -> dict:
    """The reply of a site with no evaluation patients (a training site under validation_fraction 0):
    every endpoint and horizon skipped with `reason`, in calibration_reply's shape."""
    return {
        "endpoints": {endpoint: {f"{h:g}": {"skipped": reason} for h in horizons_days} for endpoint in endpoints},
        "patients": 0,
    }


def competing_from_config(hazards: dict[str, BaselineHazard], entries: dict[str, dict]) -> dict[str, CompetingBaselines]:
    """The query config's competing-event baselines ({endpoint: {"cause", "pooled", "bins"}}) joined
    with the endpoints' own pooled baselines `hazards` (bins: the intervals of the site outputs)."""
    return {
        name: CompetingBaselines(
            entry["cause"], hazards[name], BaselineHazard.from_dict(entry["pooled"]), None, BaselineBins.from_dict(entry["bins"])
        )
        for name, entry in entries.items()
        if name in hazards
    }
