"""Federated binned Breslow baseline hazard against lifelines on pooled data, and its coarsening error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from survival_cohorts import linear_cohort

from stsfl.common.baseline_hazard import (
    BaselineBins,
    BaselineHazard,
    combine_bins,
    exact_grid,
    poisson_bootstrap,
    site_baseline_bins,
    time_grid,
)


def lifelines_fit(x, time, event):
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(T=time, E=event)
    cph = CoxPHFitter().fit(frame, "T", "E")
    # lifelines' baseline belongs to the centred linear predictor (x - mean) @ beta.
    eta = (x - cph._norm_mean.to_numpy()) @ cph.params_.to_numpy()
    return cph, eta


@pytest.mark.parametrize("ties_days", [0.0, 7.0])
def test_federated_bins_on_exact_grid_equal_lifelines_breslow(ties_days):
    x, time, event = linear_cohort(600, seed=1, ties_days=ties_days)
    cph, eta = lifelines_fit(x, time, event)
    edges = exact_grid(time)
    sites = np.array_split(np.random.default_rng(0).permutation(len(time)), 3)  # three unequal "sites"
    bins = combine_bins(site_baseline_bins(time[i], event[i], eta[i], edges) for i in sites)
    ours = BaselineHazard.from_bins(bins)
    expected = cph.baseline_cumulative_hazard_.iloc[:, 0]
    np.testing.assert_allclose(ours.at(expected.index.to_numpy()), expected.to_numpy(), rtol=1e-9, atol=1e-12)
    # Every site's own exact-grid bins give the same answer pooled as one site would.
    single = BaselineHazard.from_bins(site_baseline_bins(time, event, eta, edges))
    np.testing.assert_allclose(single.cumulative, ours.cumulative, rtol=1e-12)


def test_monthly_grid_coarsening_error_is_small():
    x, time, event = linear_cohort(2000, seed=2)
    _, eta = lifelines_fit(x, time, event)
    exact = BaselineHazard.from_bins(site_baseline_bins(time, event, eta, exact_grid(time)))
    monthly = BaselineHazard.from_bins(site_baseline_bins(time, event, eta, time_grid()))
    yearly = BaselineHazard.from_bins(site_baseline_bins(time, event, eta, time_grid(365.25)))
    t = np.linspace(180, 3600, 60)
    s_exact, s_month, s_year = (np.exp(-h.at(t)) for h in (exact, monthly, yearly))
    err_month, err_year = np.abs(s_month - s_exact).max(), np.abs(s_year - s_exact).max()
    assert err_month < 0.01  # monthly bins: baseline survival within 1 point of Breslow's
    assert err_month < err_year  # and coarser bins are worse


def test_stratified_sites_keep_their_own_baselines():
    x, time, event = linear_cohort(800, seed=3)
    eta = x @ np.array([0.8, -0.5, 0.3])
    fast = time[:400] / 2  # site B's hazard is 2^1.2 higher at any time: its own stratum
    edges = time_grid()
    site_a = site_baseline_bins(time[400:], event[400:], eta[400:], edges)
    site_b = site_baseline_bins(fast, event[:400], eta[:400], edges)
    h_a, h_b = BaselineHazard.from_bins(site_a), BaselineHazard.from_bins(site_b)
    pooled = BaselineHazard.from_bins(combine_bins([site_a, site_b]))
    at = h_a.at(np.array([730.0]))[0], h_b.at(np.array([730.0]))[0], pooled.at(np.array([730.0]))[0]
    assert at[0] < at[2] < at[1]
    assert 1.7 < at[1] / at[0] < 3.0


def test_bins_round_trip_and_refuse_other_grids():
    x, time, event = linear_cohort(50, seed=4)
    bins = site_baseline_bins(time, event, x[:, 0], time_grid())
    again = BaselineBins.from_dict(bins.to_dict())
    np.testing.assert_array_equal(again.events, bins.events)
    assert again.events.sum() == event[time <= time_grid()[-1]].sum()
    with pytest.raises(ValueError, match="different time grids"):
        bins + site_baseline_bins(time, event, x[:, 0], time_grid(365.25))


def test_poisson_bootstrap_brackets_the_estimate():
    x, time, event = linear_cohort(500, seed=5)
    bins = site_baseline_bins(time, event, x @ np.array([0.8, -0.5, 0.3]), time_grid())
    point = BaselineHazard.from_bins(bins).cumulative
    draws = poisson_bootstrap(bins, 400, seed=0)
    low, high = np.quantile(draws, [0.025, 0.975], axis=0)
    b = np.searchsorted(bins.edges, 1095.0)
    assert low[b] < point[b] < high[b]
    assert 0.05 < (high[b] - low[b]) / point[b] < 0.6


def test_bins_with_few_patients_at_risk_are_sent_empty():
    x, time, event = linear_cohort(60, seed=5)
    edges = time_grid()
    full = site_baseline_bins(time, event, x[:, 0], edges)
    suppressed = site_baseline_bins(time, event, x[:, 0], edges, min_at_risk=5)
    at_risk = (time[:, None] > edges[None, :-1]).sum(axis=0)
    small = at_risk < 5
    assert small.any() and (~small).any()
    assert not suppressed.risk_sum[small].any() and not suppressed.events[small].any()
    np.testing.assert_array_equal(suppressed.risk_sum[~small], full.risk_sum[~small])
    np.testing.assert_array_equal(suppressed.events[~small], full.events[~small])
    # no risk sum left is a single patient's relative risk
    assert not np.isin(suppressed.risk_sum[suppressed.risk_sum > 0], np.exp(x[:, 0])).any()
