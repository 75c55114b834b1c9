"""Absolute risks from the federated baseline hazard against a known true survival curve;
calibration (Crowson intercept / slope, risk deciles) and decision curves on known models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from survival_cohorts import BETA, linear_cohort, true_survival

from stsfl.common.absolute_risk import horizons_in_days, predict_absolute
from stsfl.common.baseline_hazard import BaselineHazard, combine_bins, site_baseline_bins, time_grid
from stsfl.common.calibration import (
    calibration_groups,
    calibration_intercept_slope,
    decision_curve,
    km_risk,
    plot_calibration,
    plot_decision_curves,
)


def _federated_fit(x, time, event, n_sites=3):
    """Cox coefficients on the pooled data (as a converged federation would reach), baseline from
    each site's monthly bins."""
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=time, E=event)
    beta = CoxPHFitter().fit(frame, "T", "E").params_.to_numpy()
    eta = x @ beta
    parts = np.array_split(np.arange(len(time)), n_sites)
    bins = combine_bins(site_baseline_bins(time[p], event[p], eta[p], time_grid()) for p in parts)
    return beta, bins


def test_prediction_is_close_to_the_true_survival_curve():
    x, time, event = linear_cohort(6000, seed=11)
    beta, bins = _federated_fit(x, time, event)
    patients = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5], [-1.0, 0.5, -1.0]])
    horizons = horizons_in_days([1, 3, 5])
    pred = predict_absolute(patients @ beta, BaselineHazard.from_bins(bins), horizons, bins=bins, n_boot=200)
    truth = 1 - true_survival(patients, horizons)
    assert np.abs(pred.risk - truth).max() < 0.03
    curve_truth = true_survival(patients, pred.times)
    assert np.abs(pred.survival - curve_truth).max() < 0.03
    assert np.all(pred.risk_low <= pred.risk) and np.all(pred.risk <= pred.risk_high)
    assert np.all(pred.risk_high[:, 1:] - pred.risk_low[:, 1:] > 0.001)  # baseline-hazard sampling error
    assert np.all(np.diff(pred.risk, axis=1) > 0)  # risk grows with the horizon


def test_calibration_of_the_true_model_and_of_an_overconfident_one():
    x, time, event = linear_cohort(4000, seed=12)
    eta_true = x @ np.asarray(BETA)
    h0 = lambda t: (np.asarray(t) / 1500.0) ** 1.2  # noqa: E731 - the true baseline
    horizon = 3 * 365.25
    good = calibration_intercept_slope(eta_true, h0, time, event, horizon)
    assert abs(good.intercept) < 0.1 and abs(good.slope - 1) < 0.1
    over = calibration_intercept_slope(2 * eta_true, h0, time, event, horizon)
    assert abs(over.slope - 0.5) < 0.06  # predictions twice too extreme -> slope 1/2
    high = calibration_intercept_slope(eta_true + np.log(2), h0, time, event, horizon)
    assert abs(high.intercept + np.log(2)) < 0.1  # twice the hazard -> log(O/E) = -log 2
    risk = 1 - np.exp(-h0(horizon) * np.exp(eta_true))
    groups = calibration_groups(risk, time, event, horizon)
    assert len(groups.n) == 10 and groups.n.sum() == len(time)
    assert np.abs(groups.predicted - groups.observed).max() < 0.06
    assert np.all(np.diff(groups.predicted) > 0)


def test_decision_curve_against_treat_all_and_treat_none(tmp_path):
    x, time, event = linear_cohort(3000, seed=13)
    horizon = 3 * 365.25
    risk = 1 - true_survival(x, np.array([horizon]))[:, 0]
    curve = decision_curve(risk, time, event, horizon, thresholds=[0.001, 0.2, 0.4])
    everyone = km_risk(time, event, horizon)
    np.testing.assert_allclose(curve.treat_all[0], everyone - (1 - everyone) * 0.001 / 0.999)
    assert abs(curve.model[0] - curve.treat_all[0]) < 1e-3  # at a tiny threshold the model treats nearly everyone
    assert curve.model[1] > max(curve.treat_all[1], 0.0) + 0.01  # an informative model beats both defaults
    noise = decision_curve(np.random.default_rng(0).uniform(0.39, 0.41, len(time)), time, event, horizon, [0.2, 0.4])
    assert noise.model[0] == noise.treat_all[0]  # uninformative risks above the threshold = treat all
    groups = calibration_groups(risk, time, event, horizon)
    png = plot_calibration({"3 years": (groups, None)}, tmp_path / "cal.png", "test")
    dca = plot_decision_curves({"3 years": curve}, tmp_path / "dca.png", "test")
    assert png.stat().st_size > 5000 and dca.stat().st_size > 5000


def test_kaplan_meier_risk_equals_lifelines():
    from lifelines import KaplanMeierFitter

    _, time, event = linear_cohort(300, seed=14, ties_days=30.0)  # tied event and censoring times
    km = KaplanMeierFitter().fit(time, event)
    for horizon in (10.0, 365.25, 1000.0, 1095.75, 5000.0):
        assert km_risk(time, event, horizon) == pytest.approx(1 - km.predict(horizon), abs=1e-12)
