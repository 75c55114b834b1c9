"""A site's calibration of crude cumulative incidences (endpoints with a competing event).

Per endpoint with a competing event (the schema's `competing`) and horizon, on the site's
evaluation patients: the predicted crude cumulative incidence from the two pooled cause-specific
baselines (stsfl.common.competing_risks) against the Aalen-Johansen observed incidence: groups of
predicted incidence, cloglog pseudo-value intercept and slope, observed and expected incidence
and O/E, the decision curve; and, for comparison, the same intercept, slope and O/E of today's
1 - S ("without death": the competing event treated as censoring). Aggregates only.
"""

from __future__ import annotations

import numpy as np

from stsfl.common.cif_calibration import (
    IncidenceCalibration,
    incidence_calibration,
    incidence_decision_curve,
    incidence_groups,
    pseudo_observations,
)
from stsfl.common.competing_risks import EVENT, CompetingBaselines, cumulative_incidence
from stsfl.common.risk_group_km import MIN_GROUP_SIZE

DECILES = 10
MIN_EVENTS = 10  # as calibration_site: fewer events before the horizon, the fit is not estimable


def _fit(fit: IncidenceCalibration) -> dict[str, float]:
    return {
        "intercept": fit.intercept,
        "slope": fit.slope,
        "observed": fit.observed,
        "expected": fit.expected,
        "observed_expected": fit.observed_expected,
    }


def incidence_entry(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], baselines: CompetingBaselines, horizon: float
) -> dict:
    """{"cause", "patients", "events", "groups", "intercept", "slope", "observed", "expected",
    "observed_expected", "decision", "without_competing": {same fit of 1 - S}} or {"skipped": reason}.
    `arrays`: (time, status, log-risk, competing log-risk) [n] of the site's evaluation patients."""
    time, status, eta, eta_cause = arrays
    events = int(np.sum((status == EVENT) & (time <= horizon)))
    if events < MIN_EVENTS:
        return {"skipped": f"{events} events before the horizon (< {MIN_EVENTS}): too few to estimate calibration"}
    predicted = cumulative_incidence(eta, eta_cause, baselines.event, baselines.competing, np.array([horizon]))[:, 0]
    without = 1.0 - baselines.event.survival(eta, np.array([horizon]))[:, 0]
    # Small-cell suppression as for the Kaplan-Meier curves: no group smaller than MIN_GROUP_SIZE.
    groups = incidence_groups(predicted, time, status, horizon, groups=min(DECILES, len(time) // MIN_GROUP_SIZE))
    curve = incidence_decision_curve(predicted, time, status, horizon)
    pseudo = pseudo_observations(time, status, horizon)
    return {
        "cause": baselines.cause,
        "patients": int(len(time)),
        "events": events,
        "groups": {"n": groups.n.tolist(), "predicted": groups.predicted.tolist(), "observed": groups.observed.tolist()},
        **_fit(incidence_calibration(predicted, time, status, horizon, pseudo)),
        "decision": {
            "thresholds": curve.thresholds.tolist(),
            "model": curve.model.tolist(),
            "treat_all": curve.treat_all.tolist(),
        },
        "without_competing": _fit(incidence_calibration(without, time, status, horizon, pseudo)),
    }
