"""Survival metrics against lifelines / scikit-survival and against cases with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index

from stsfl.common.metrics import (
    EndpointSplit,
    bootstrap_ci,
    breslow_survival,
    endpoint_report,
    harrell_c,
    harrell_c_difference,
    plot_kaplan_meier,
    risk_groups,
    time_dependent_auc,
    uno_c,
    usable_horizons,
)


@pytest.fixture
def cohort():
    rng = np.random.default_rng(3)
    n = 200
    x = rng.normal(size=(n, 2))
    risk = x @ np.array([0.9, -0.4])
    event_time = rng.exponential(1000 * np.exp(-risk))
    censor = rng.uniform(200, 3000, n)
    time = np.round(np.minimum(event_time, censor))  # rounding makes ties
    event = (event_time <= censor).astype(float)
    return x, time, event, risk


def test_harrell_c_equals_lifelines(cohort):
    _, time, event, risk = cohort
    noisy = risk + np.random.default_rng(0).normal(0, 1, len(risk))
    assert harrell_c(time, event, noisy) == pytest.approx(concordance_index(time, -noisy, event), abs=1e-9)


def test_uno_c_without_censoring_is_harrell_c(cohort):
    _, time, _, risk = cohort
    all_events = np.ones_like(time)
    tau = time.max() + 1
    assert uno_c(time, all_events, time, all_events, risk, tau=tau) == pytest.approx(harrell_c(time, all_events, risk), abs=1e-9)


def test_time_dependent_auc_perfect_ranking_and_horizon_filter(cohort):
    _, time, event, _ = cohort
    auc = time_dependent_auc(time, event, time, event, -time, [-5.0, 365.0, 730.0, 1e9])
    assert list(auc) == [365.0, 730.0] and all(v == pytest.approx(1.0) for v in auc.values())
    assert usable_horizons([10, 20], np.array([5.0, 15.0]), np.array([1.0, 30.0])).tolist() == [10.0]


def test_breslow_survival_equals_lifelines(cohort):
    x, time, event, _ = cohort
    df = pd.DataFrame(x, columns=["a", "b"]).assign(T=time, E=event)
    cph = CoxPHFitter().fit(df, "T", "E")
    # lifelines' baseline is for centred covariates: the linear predictor must be centred alike.
    eta = (x - x.mean(0)) @ cph.params_.to_numpy()
    # At event times (lifelines interpolates its step function linearly in between).
    times = np.unique(time[event > 0])[[2, 20, 60, 100]]
    ours = breslow_survival(time, event, eta, eta[:5], times)
    theirs = cph.predict_survival_function(df.iloc[:5], times=times).to_numpy().T
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_risk_groups_logrank_and_km_png(cohort, tmp_path):
    _, time, event, risk = cohort
    groups = risk_groups(time, event, risk)
    assert groups.high.sum() == len(risk) // 2
    expected = logrank_test(time[groups.high], time[~groups.high], event[groups.high], event[~groups.high]).p_value
    assert groups.logrank_p == pytest.approx(expected) and groups.logrank_p < 1e-3
    png = plot_kaplan_meier(time, event, groups, tmp_path / "km.png", "OS")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bootstrap_intervals(cohort):
    _, time, event, risk = cohort
    ci = bootstrap_ci(lambda i: harrell_c(time[i], event[i], risk[i]), len(time), n_boot=100, seed=1)
    assert ci.low < ci.estimate < ci.high and ci.estimate == pytest.approx(harrell_c(time, event, risk))
    assert ci == bootstrap_ci(lambda i: harrell_c(time[i], event[i], risk[i]), len(time), n_boot=100, seed=1)
    same = harrell_c_difference(time, event, risk, risk, n_boot=50)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    better = harrell_c_difference(time, event, risk, np.zeros_like(risk) + np.arange(len(risk)) * 0, n_boot=50)
    assert better.low > 0  # the true risk beats a constant (C = 0.5)


def test_endpoint_report(cohort):
    _, time, event, risk = cohort
    half = len(time) // 2
    train = EndpointSplit.from_arrays(time[:half], event[:half], risk[:half])
    observed = np.ones(len(time) - half, bool)
    observed[:10] = False
    test = EndpointSplit.from_arrays(time[half:], event[half:], risk[half:], observed)
    report = endpoint_report(train, test, horizons=(365, 730), n_boot=20)
    assert report["n"] == len(time) - half - 10
    assert 0.6 < report["harrell_c"].estimate < 1 and 0.6 < report["uno_c"] < 1
    assert set(report["td_auc"]) <= {365.0, 730.0} and 0 < report["integrated_brier"] < 0.25
