"""Calibration of crude cumulative incidences (an endpoint with a competing event) at a horizon.

Observed: the Aalen-Johansen cumulative incidence of the endpoint (status 1 event, 2 competing
event, 0 censored; tested equal to lifelines' AalenJohansenFitter):

    F(t) = sum_{t_j <= t} S(t_{j-1}) d1_j / n_j,    S(t_j) = prod_{t_i <= t_j} (1 - (d1_i + d2_i) / n_i)

Kaplan-Meier's 1 - S of the endpoint alone (death censoring) overstates it: that is the risk in a
world without the competing event.

Calibration intercept and slope (van Geloven et al. 2022, BMJ 377:e069249): jackknife
pseudo-observations of F(t), theta_i = n F(t) - (n - 1) F_(-i)(t), regressed on the predicted
incidence p_i with a complementary log-log link, least squares (a Gaussian working model, as
geese does there):

    E theta_i = 1 - exp(-exp(a + cloglog(p_i)))          intercept a (ideal 0)
    E theta_i = 1 - exp(-exp(a + b cloglog(p_i)))        slope b (ideal 1; below 1: too extreme)

O/E is F(t) over the mean predicted incidence. The decision curve is the survival one
(stsfl.common.calibration) with the observed risk of the treated by Aalen-Johansen. Every result
is an aggregate of the site's patients; none of them leaves as a per-patient value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stsfl.common.calibration import CalibrationGroups, DecisionCurve


def aalen_johansen(time: np.ndarray, status: np.ndarray, horizon: float) -> float:
    """Aalen-Johansen cumulative incidence of cause 1 at `horizon`; time [N] days, status [N] in {0, 1, 2}."""
    time, status = np.asarray(time, float), np.asarray(status)
    keep = (status > 0) & (time <= horizon)
    event_times = np.unique(time[keep])
    if not len(event_times):
        return 0.0
    at_risk = len(time) - np.searchsorted(np.sort(time), event_times, side="left")
    index = np.searchsorted(event_times, time[keep])
    d1 = np.bincount(index[status[keep] == 1], minlength=len(event_times))
    d_all = np.bincount(index, minlength=len(event_times))
    survival = np.cumprod(1.0 - d_all / at_risk)
    before = np.concatenate([[1.0], survival[:-1]])
    return float(np.sum(before * d1 / at_risk))


def pseudo_observations(time: np.ndarray, status: np.ndarray, horizon: float) -> np.ndarray:
    """Jackknife pseudo-observations [N] of the Aalen-Johansen incidence at `horizon` (O(N^2) time)."""
    time, status = np.asarray(time, float), np.asarray(status)
    n = len(time)
    full = aalen_johansen(time, status, horizon)
    keep = np.ones(n, bool)
    out = np.empty(n)
    for i in range(n):
        keep[i] = False
        out[i] = n * full - (n - 1) * aalen_johansen(time[keep], status[keep], horizon)
        keep[i] = True
    return out


def cloglog(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(-np.log1p(-p))


def _fit_cloglog(y: np.ndarray, offset: np.ndarray, x: np.ndarray | None, iterations: int = 100) -> np.ndarray:
    """Gauss-Newton least squares of y on 1 - exp(-exp(offset + [1, x] @ coef)); returns coef."""
    design = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    coef = np.zeros(design.shape[1])
    if x is not None:
        coef[1] = 1.0
    for _ in range(iterations):
        lp = np.clip(offset + design @ coef, -30, 5)
        mu = -np.expm1(-np.exp(lp))
        jac = design * (np.exp(lp - np.exp(lp)))[:, None]
        step = np.linalg.lstsq(jac, y - mu, rcond=None)[0]
        step = np.clip(step, -1.0, 1.0)  # damped: far from the optimum a full step can overshoot
        coef += step
        if np.abs(step).max() < 1e-9:
            break
    return coef


@dataclass(frozen=True)
class IncidenceCalibration:
    """At one horizon: intercept (ideal 0) and slope (ideal 1) of the cloglog pseudo-value fit,
    observed (Aalen-Johansen) and expected (mean predicted) incidence, and their ratio O/E."""

    intercept: float
    slope: float
    observed: float
    expected: float

    @property
    def observed_expected(self) -> float:
        return self.observed / self.expected if self.expected > 0 else float("nan")


def incidence_calibration(
    predicted: np.ndarray, time: np.ndarray, status: np.ndarray, horizon: float, pseudo: np.ndarray | None = None
) -> IncidenceCalibration:
    """Calibration of predicted incidences [N] at `horizon` against the Aalen-Johansen observed one
    (`pseudo`: the patients' pseudo-observations at `horizon` when already computed)."""
    predicted = np.asarray(predicted, float)
    if not np.any((np.asarray(status) == 1) & (np.asarray(time, float) <= horizon)):
        raise ValueError(f"no event before the horizon {horizon:g}: calibration is undefined")
    pseudo = pseudo_observations(time, status, horizon) if pseudo is None else pseudo
    lp = cloglog(predicted)
    intercept = _fit_cloglog(pseudo, lp, None)[0]
    slope = _fit_cloglog(pseudo, np.zeros_like(lp), lp)[1]
    return IncidenceCalibration(float(intercept), float(slope), aalen_johansen(time, status, horizon), float(predicted.mean()))


def incidence_groups(
    predicted: np.ndarray, time: np.ndarray, status: np.ndarray, horizon: float, groups: int = 10
) -> CalibrationGroups:
    """Quantile groups of predicted incidence [N] with their Aalen-Johansen observed incidence."""
    predicted, time, status = np.asarray(predicted, float), np.asarray(time, float), np.asarray(status)
    order = np.argsort(predicted, kind="stable")
    parts = [p for p in np.array_split(order, max(1, min(groups, len(predicted)))) if len(p)]
    return CalibrationGroups(
        n=np.array([len(p) for p in parts]),
        predicted=np.array([predicted[p].mean() for p in parts]),
        observed=np.array([aalen_johansen(time[p], status[p], horizon) for p in parts]),
    )


def incidence_decision_curve(
    predicted: np.ndarray,
    time: np.ndarray,
    status: np.ndarray,
    horizon: float,
    thresholds: Sequence[float] = tuple(np.arange(0.01, 0.81, 0.01)),
) -> DecisionCurve:
    """Net benefit of treating when the predicted incidence >= threshold, the observed risk of the
    treated by Aalen-Johansen (van Geloven et al. 2022); treat-all likewise, treat-none 0."""
    predicted, time, status = np.asarray(predicted, float), np.asarray(time, float), np.asarray(status)
    p = np.asarray(thresholds, float)
    odds = p / (1 - p)
    everyone = aalen_johansen(time, status, horizon)
    model = np.zeros_like(p)
    for i, threshold in enumerate(p):
        treated = predicted >= threshold
        if treated.any():
            share = treated.mean()
            risk = aalen_johansen(time[treated], status[treated], horizon)
            model[i] = risk * share - (1 - risk) * share * odds[i]
    return DecisionCurve(p, model, everyone - (1 - everyone) * odds)


def censoring_survival(time: np.ndarray, status: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Kaplan-Meier G(t) of the censoring distribution (status 0 the 'event'), at `at` [T]."""
    time, censored = np.asarray(time, float), np.asarray(status) == 0
    times, counts = np.unique(time[censored], return_counts=True)
    at_risk = len(time) - np.searchsorted(np.sort(time), times, side="left")
    steps = np.cumprod(1.0 - counts / at_risk)
    index = np.searchsorted(times, np.asarray(at, float), side="right") - 1
    return np.where(index >= 0, steps[np.maximum(index, 0)], 1.0)


def integrated_incidence_brier(
    time: np.ndarray, status: np.ndarray, predicted: np.ndarray, times: np.ndarray, censor: tuple[np.ndarray, np.ndarray]
) -> float:
    """Integrated Brier score of predicted incidences [N, T] at `times` [T] (trapezoid, divided by the
    range), inverse-probability-of-censoring weighted (Graf; competing events as in Schoop et al.
    2011): y_i(t) = 1{T_i <= t, status 1}, weight 1 / G(T_i) for an event of either cause by t,
    1 / G(t) for those still event-free, 0 for those censored before t. G: Kaplan-Meier of the
    censoring of `censor` = (time, status). Without competing events it is the survival IBS of 1 - F."""
    time, status, times = np.asarray(time, float), np.asarray(status), np.asarray(times, float)
    g_own = np.maximum(censoring_survival(*censor, time), 1e-12)
    g_t = np.maximum(censoring_survival(*censor, times), 1e-12)
    before = time[:, None] <= times[None, :]
    weight = np.where(before & (status[:, None] > 0), 1.0 / g_own[:, None], 0.0)
    weight = np.where(~before, 1.0 / g_t[None, :], weight)
    observed = (before & (status[:, None] == 1)).astype(float)
    scores = np.mean(weight * (observed - np.asarray(predicted, float)) ** 2, axis=0)
    return float(np.trapezoid(scores, times) / (times[-1] - times[0]))
