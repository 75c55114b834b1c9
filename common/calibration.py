"""Calibration of absolute risks at a horizon, and decision-curve analysis (net benefit).

Calibration (per horizon t, on patients with time and event):
- by risk group: patients sorted into `groups` quantile groups of predicted risk (deciles); per
  group the mean predicted risk and the Kaplan-Meier observed risk 1 - KM(t);
- calibration-in-the-large (intercept) and calibration slope as in Crowson et al. (2016, Stat
  Methods Med Res 25:1692), follow-up truncated at t: y_i = event before t, expected count
  E_i = H0(min(T_i, t)) exp(eta_i). Poisson regression with offset log E_i and no covariate gives
  the intercept a = log(observed / expected); with the linear predictor eta (offset
  log H0(min(T_i, t))) its coefficient is the slope. Perfect calibration: a = 0, slope = 1; a slope
  below 1 means predictions too extreme.

Decision curve (Vickers et al. 2008, survival version): treating patients whose predicted risk at
t is at least the threshold p has net benefit
    NB(p) = (1 - KM_+(t)) n_+ / n - KM_+(t) n_+ / n * p / (1 - p)
with KM_+ the Kaplan-Meier curve of the treated; treat-all uses everyone, treat-none is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stsfl.common.figures import pyplot, save_png


def km_risk(time: np.ndarray, event: np.ndarray, horizon: float) -> float:
    """1 - Kaplan-Meier survival at `horizon` (numpy: it is called for every risk group and threshold;
    tested equal to lifelines' KaplanMeierFitter)."""
    time = np.asarray(time, float)
    is_event = np.asarray(event, float) > 0.5
    event_times, deaths = np.unique(time[is_event & (time <= horizon)], return_counts=True)
    at_risk = len(time) - np.searchsorted(np.sort(time), event_times, side="left")
    return float(1.0 - np.prod(1.0 - deaths / at_risk))


@dataclass
class CalibrationGroups:
    """Per risk group: patients, mean predicted and Kaplan-Meier observed risk at the horizon."""

    n: np.ndarray
    predicted: np.ndarray
    observed: np.ndarray


def calibration_groups(
    risk: np.ndarray, time: np.ndarray, event: np.ndarray, horizon: float, groups: int = 10
) -> CalibrationGroups:
    """Quantile groups of predicted risk at `horizon` (risk [N]) with their KM observed risk."""
    risk, time, event = (np.asarray(a, float) for a in (risk, time, event))
    order = np.argsort(risk, kind="stable")
    parts = [p for p in np.array_split(order, min(groups, len(risk))) if len(p)]
    return CalibrationGroups(
        n=np.array([len(p) for p in parts]),
        predicted=np.array([risk[p].mean() for p in parts]),
        observed=np.array([km_risk(time[p], event[p], horizon) for p in parts]),
    )


def _poisson_fit(y: np.ndarray, offset: np.ndarray, x: np.ndarray | None, iterations: int = 50) -> np.ndarray:
    """Newton-Raphson Poisson regression log mu = offset + [1, x] @ coef; returns coef."""
    design = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    coef = np.zeros(design.shape[1])
    coef[0] = np.log(max(y.sum(), 1e-12) / np.exp(offset).sum())
    for _ in range(iterations):
        mu = np.exp(offset + design @ coef)
        step = np.linalg.solve(design.T @ (design * mu[:, None]), design.T @ (y - mu))
        coef += step
        if np.abs(step).max() < 1e-10:
            break
    return coef


@dataclass(frozen=True)
class CalibrationFit:
    """Calibration-in-the-large (log O/E, ideal 0) and slope (ideal 1) at one horizon; O and E counts."""

    intercept: float
    slope: float
    observed: float
    expected: float


def calibration_intercept_slope(
    log_risk: np.ndarray,
    cumulative_baseline: Callable[[np.ndarray], np.ndarray],
    time: np.ndarray,
    event: np.ndarray,
    horizon: float,
) -> CalibrationFit:
    """Crowson's Poisson calibration at `horizon`; cumulative_baseline(t) = H0(t) of the model."""
    eta, time = np.asarray(log_risk, float), np.asarray(time, float)
    y = ((np.asarray(event, float) > 0.5) & (time <= horizon)).astype(float)
    h0 = np.maximum(cumulative_baseline(np.minimum(time, horizon)), 1e-12)
    if y.sum() == 0:
        raise ValueError(f"no event before the horizon {horizon:g}: calibration is undefined")
    intercept = _poisson_fit(y, np.log(h0) + eta, None)[0]
    slope = _poisson_fit(y, np.log(h0), eta)[1]
    return CalibrationFit(float(intercept), float(slope), float(y.sum()), float((h0 * np.exp(eta)).sum()))


@dataclass
class DecisionCurve:
    """Net benefit [P] of the model and of treat-all at `thresholds` [P] (treat-none is 0)."""

    thresholds: np.ndarray
    model: np.ndarray
    treat_all: np.ndarray


def decision_curve(
    risk: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    horizon: float,
    thresholds: Sequence[float] = tuple(np.arange(0.01, 0.81, 0.01)),
) -> DecisionCurve:
    """Survival decision curve at `horizon` from predicted risks [N] (see the module docstring)."""
    risk, time, event = (np.asarray(a, float) for a in (risk, time, event))
    p = np.asarray(thresholds, float)
    odds = p / (1 - p)
    everyone = km_risk(time, event, horizon)
    treat_all = everyone - (1 - everyone) * odds
    model = np.zeros_like(p)
    for i, threshold in enumerate(p):
        treated = risk >= threshold
        if treated.any():
            share = treated.mean()
            r = km_risk(time[treated], event[treated], horizon)
            model[i] = r * share - (1 - r) * share * odds[i]
    return DecisionCurve(p, model, treat_all)


def plot_calibration(
    per_horizon: dict[str, tuple[CalibrationGroups, CalibrationFit | None]], path: str | Path, title: str, ncols: int = 3
) -> Path:
    """Predicted vs observed risk per group, one panel per label (rows of `ncols`), with intercept and slope."""
    ncols = min(ncols, len(per_horizon))
    nrows = -(-len(per_horizon) // ncols)
    fig, axes = pyplot().subplots(nrows, ncols, figsize=(3.6 * ncols, 3.5 * nrows), squeeze=False)
    for ax in axes.flat[len(per_horizon) :]:
        ax.axis("off")
    for ax, (label, (groups, fit)) in zip(axes.flat, per_horizon.items()):
        top = max(groups.predicted.max(), groups.observed.max(), 0.05) * 1.1
        ax.plot([0, top], [0, top], color="grey", ls="--", lw=1)
        ax.scatter(groups.predicted, groups.observed, s=12 + groups.n, color="tab:blue")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("predicted risk")
        ax.set_ylabel("observed risk (Kaplan-Meier)")
        text = f"{label}" if fit is None else f"{label}\nintercept {fit.intercept:+.2f}, slope {fit.slope:.2f}"
        ax.set_title(text, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def plot_decision_curves(curves: dict[str, DecisionCurve], path: str | Path, title: str) -> Path:
    """Net benefit vs threshold, one panel per horizon label: model, treat-all, treat-none."""
    fig, axes = pyplot().subplots(1, len(curves), figsize=(3.6 * len(curves), 3.4), squeeze=False)
    for ax, (label, curve) in zip(axes[0], curves.items()):
        ax.plot(curve.thresholds, curve.model, color="tab:blue", label="model")
        ax.plot(curve.thresholds, curve.treat_all, color="tab:orange", label="treat all")
        ax.axhline(0.0, color="black", lw=1, label="treat none")
        top = max(curve.model.max(), curve.treat_all.max(), 0.01)
        ax.set_ylim(-0.05 * top - 0.01, top * 1.15)
        ax.set_xlabel("threshold probability")
        ax.set_ylabel("net benefit")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)
