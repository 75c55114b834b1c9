"""Recalibration at a centre that joins after the federation, without training: keep the network,
estimate the site's own baseline hazards and calibration slopes from the site's own patients.

Per endpoint, on the site's patients with that endpoint (log-risks eta of the exported network):

- calibration slope b: the coefficient of eta in a Cox model with eta as its only covariate
  (lifelines). b < 1: the network's risks are too spread out at this site. A negative b (the
  network ranks the other way here, in practice noise around 0) is set to 0: the site then gets
  its own baseline risk for everyone rather than a reversed ranking;
- the site's baseline hazard on the federation's grid (stsfl.common.baseline_hazard) with b * eta
  as the linear predictor (the baseline absorbs the site's level: calibration-in-the-large);
- for an endpoint with a competing event (dm, lr: death competes), the same for the competing
  event's cause-specific hazard, with the competing endpoint's log-risk as covariate, so the crude
  cumulative incidence is recalibrated as a whole (stsfl.common.competing_risks).

Before / after at each horizon: the risk the model file gives (pooled baselines) and the
recalibrated one, each against the observed risk (Aalen-Johansen; Kaplan-Meier without a
competing event) by intercept, slope and O/E (stsfl.common.cif_calibration). The "after" figures
are cross-fitted (each fold's risks from a recalibration fitted on the other folds): fitting and
judging on the same patients would flatter it. Everything stays at the site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter

from stsfl.client.prediction.baseline_site import SiteRisks
from stsfl.common.baseline_hazard import BaselineBins, BaselineHazard, site_baseline_bins
from stsfl.common.cif_calibration import incidence_calibration, pseudo_observations
from stsfl.common.competing_risks import COMPETING, EVENT, cumulative_incidence

MIN_EVENTS = 10  # fewer events before a horizon: no calibration figures (as the calibration phase)


@dataclass(frozen=True)
class RiskModel:
    """How one endpoint's absolute risk is computed: slope x log-risk on a baseline, and for an
    endpoint with a competing event the competing event's (cause, slope, baseline)."""

    slope: float
    hazard: BaselineHazard
    competing: tuple[str, float, BaselineHazard] | None = None

    def risk(self, eta: np.ndarray, eta_cause: np.ndarray, horizon: float) -> np.ndarray:
        """Risk [n] at `horizon`: crude cumulative incidence with a competing event, else 1 - S."""
        t = np.array([horizon])
        if self.competing is None:
            return 1.0 - self.hazard.survival(self.slope * eta, t)[:, 0]
        _, slope, hazard = self.competing
        return cumulative_incidence(self.slope * eta, slope * eta_cause, self.hazard, hazard, t)[:, 0]


@dataclass(frozen=True)
class EndpointData:
    """One endpoint's followed patients: time, status (1 event, 2 competing event, 0 censored),
    eta and the competing endpoint's eta (zeros without one), all [n]; `cause` or None."""

    time: np.ndarray
    status: np.ndarray
    eta: np.ndarray
    eta_cause: np.ndarray
    cause: str | None

    def subset(self, index: np.ndarray) -> EndpointData:
        return EndpointData(self.time[index], self.status[index], self.eta[index], self.eta_cause[index], self.cause)


def endpoint_data(risks: SiteRisks, k: int) -> EndpointData:
    arrays = risks.competing_arrays(k)
    if arrays is not None:
        return EndpointData(*arrays, risks.competing[risks.endpoints[k]])
    seen = np.asarray(risks.observed[:, k], bool)
    status = (risks.event[seen, k] > 0.5).astype(int)
    return EndpointData(risks.time[seen, k], status, risks.log_risk[seen, k], np.zeros(int(seen.sum())), None)


def cox_slope(time: np.ndarray, event: np.ndarray, eta: np.ndarray) -> float:
    """Coefficient of eta [n] in a one-covariate Cox model (1.0 when there is no event to fit it on)."""
    if np.sum(event) < 2 or np.std(eta) < 1e-12:
        return 1.0
    frame = pd.DataFrame({"eta": eta, "T": time, "E": np.asarray(event, float)})
    return float(CoxPHFitter().fit(frame, "T", "E").params_["eta"])


def _fit_cause(time, status, eta, cause_code: int, edges: np.ndarray) -> tuple[float, BaselineBins]:
    slope = max(cox_slope(time, status == cause_code, eta), 0.0)  # see the module docstring
    return slope, site_baseline_bins(time, status == cause_code, slope * eta, edges)


def fit_endpoint(data: EndpointData, edges: np.ndarray) -> tuple[RiskModel, dict]:
    """The recalibrated model of one endpoint and its document entry {"slope", "bins"[, "competing":
    {"cause", "slope", "bins"}]} (bins: the site's own, on the federation's grid `edges`)."""
    slope, bins = _fit_cause(data.time, data.status, data.eta, EVENT, edges)
    entry: dict = {"slope": slope, "bins": bins.to_dict()}
    competing = None
    if data.cause is not None:
        c_slope, c_bins = _fit_cause(data.time, data.status, data.eta_cause, COMPETING, edges)
        entry["competing"] = {"cause": data.cause, "slope": c_slope, "bins": c_bins.to_dict()}
        competing = (data.cause, c_slope, BaselineHazard.from_bins(c_bins))
    return RiskModel(slope, BaselineHazard.from_bins(bins), competing), entry


def model_from_entry(entry: dict) -> RiskModel:
    """The RiskModel of a recalibration document's endpoint entry (see fit_endpoint)."""
    competing = entry.get("competing")
    return RiskModel(
        float(entry["slope"]),
        BaselineHazard.from_bins(BaselineBins.from_dict(entry["bins"])),
        None
        if competing is None
        else (competing["cause"], float(competing["slope"]), BaselineHazard.from_bins(BaselineBins.from_dict(competing["bins"]))),
    )


def cross_fitted_risk(data: EndpointData, edges: np.ndarray, horizons: list[float], folds: int, seed: int) -> np.ndarray:
    """Risks [n, H] of every patient from a recalibration fitted without the patient's fold."""
    order = np.random.default_rng(seed).permutation(len(data.time))
    out = np.empty((len(data.time), len(horizons)))
    for part in np.array_split(order, folds):
        rest = np.setdiff1d(order, part)
        model, _ = fit_endpoint(data.subset(rest), edges)
        for j, horizon in enumerate(horizons):
            out[part, j] = model.risk(data.eta[part], data.eta_cause[part], horizon)
    return out


def before_after(data: EndpointData, before: RiskModel, after: np.ndarray, horizons: list[float]) -> dict:
    """{"<h>": {"events", "before": fit, "after": fit} or {"skipped": reason}}; fit = intercept,
    slope, observed, expected, observed_expected against Aalen-Johansen (Kaplan-Meier) at the horizon."""
    out = {}
    for j, horizon in enumerate(horizons):
        events = int(np.sum((data.status == EVENT) & (data.time <= horizon)))
        if events < MIN_EVENTS:
            out[f"{horizon:g}"] = {"skipped": f"{events} events before the horizon (< {MIN_EVENTS})"}
            continue
        pseudo = pseudo_observations(data.time, data.status, horizon)
        entry: dict = {"events": events}
        for name, risk in (("before", before.risk(data.eta, data.eta_cause, horizon)), ("after", after[:, j])):
            fit = incidence_calibration(risk, data.time, data.status, horizon, pseudo)
            entry[name] = {
                "intercept": fit.intercept,
                "slope": fit.slope,
                "observed": fit.observed,
                "expected": fit.expected,
                "observed_expected": fit.observed_expected,
            }
        out[f"{horizon:g}"] = entry
    return out
