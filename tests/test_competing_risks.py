"""Competing risks: crude cumulative incidence from binned cause-specific baselines, the
Aalen-Johansen observed incidence (against lifelines), and its calibration and decision curve."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import AalenJohansenFitter, KaplanMeierFitter

from stsfl.common.baseline_hazard import BaselineHazard, exact_grid, site_baseline_bins, time_grid
from stsfl.common.cif_calibration import (
    aalen_johansen,
    incidence_calibration,
    incidence_decision_curve,
    incidence_groups,
    integrated_incidence_brier,
    pseudo_observations,
)
from stsfl.common.competing_risks import (
    CompetingBaselines,
    competing_status,
    cumulative_incidence,
    predict_incidence,
)


def competing_cohort(n: int, seed: int, rate1: float = 4e-4, rate2: float = 3e-4, censor_days: float = 3000.0):
    """Constant cause-specific hazards rate_c exp(x_c) (per day) with covariates x1, x2 [N]:
    (time, status, x1, x2); uniform censoring."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(0, 0.7, n), rng.normal(0, 0.7, n)
    t1 = rng.exponential(1 / (rate1 * np.exp(x1)))
    t2 = rng.exponential(1 / (rate2 * np.exp(x2)))
    c = rng.uniform(200, censor_days, n)
    time = np.minimum.reduce([t1, t2, c])
    status = np.where(time == t1, 1, np.where(time == t2, 2, 0))
    return time, status, x1, x2


@pytest.mark.parametrize("seed", [0, 1])
def test_aalen_johansen_matches_lifelines(seed):
    time, status, _, _ = competing_cohort(300, seed)
    fitter = AalenJohansenFitter(calculate_variance=False).fit(time, status, event_of_interest=1)
    curve = fitter.cumulative_density_
    for horizon in (365.25, 3 * 365.25, 5 * 365.25):
        expected = float(curve[curve.index <= horizon].iloc[-1, 0])
        assert aalen_johansen(time, status, horizon) == pytest.approx(expected, abs=1e-10)
    # and it is below Kaplan-Meier's 1 - S with the competing event as censoring
    km = KaplanMeierFitter().fit(time, status == 1)
    assert aalen_johansen(time, status, 1826.25) < 1 - float(km.predict(1826.25)) - 0.01


def test_status_is_competing_when_the_competing_event_ends_follow_up():
    status = competing_status(
        time=np.array([100, 200, 300, 400]),
        event=np.array([1, 0, 0, 0]),
        competing_time=np.array([500, 200, 350, 150]),
        competing_event=np.array([1, 1, 1, 0]),
    )
    # event; death on the day of censoring; censored before a later death; censored, death never seen
    assert status.tolist() == [1, 2, 0, 0]


def test_incidence_from_constant_hazards_matches_the_closed_form():
    rate1, rate2 = 4e-4, 3e-4
    edges = time_grid()
    eta1, eta2 = np.array([-0.5, 0.0, 1.2]), np.array([0.3, 0.0, -1.0])
    times = np.array([100.0, 1000.0, 1826.25])
    incidence = cumulative_incidence(
        eta1, eta2, BaselineHazard(edges, rate1 * edges), BaselineHazard(edges, rate2 * edges), times
    )
    l1, l2 = rate1 * np.exp(eta1)[:, None], rate2 * np.exp(eta2)[:, None]
    assert incidence == pytest.approx(l1 / (l1 + l2) * (1 - np.exp(-(l1 + l2) * times)), rel=1e-9)


def test_federated_exact_grid_incidence_without_covariates_is_aalen_johansen():
    time, status, _, _ = competing_cohort(400, 2)
    zero = np.zeros(len(time))
    edges = exact_grid(time)
    event = BaselineHazard.from_bins(site_baseline_bins(time, status == 1, zero, edges))
    competing = BaselineHazard.from_bins(site_baseline_bins(time, status == 2, zero, edges))
    horizons = np.array([365.25, 1826.25])
    predicted = cumulative_incidence(np.zeros(1), np.zeros(1), event, competing, horizons)[0]
    observed = [aalen_johansen(time, status, h) for h in horizons]
    # the product integral uses exp(-dH) where Aalen-Johansen has 1 - dH: equal up to O(dH^2) per step
    assert predicted == pytest.approx(observed, abs=0.005)


def fitted_baselines(time, status, x1, x2, bins=True):
    edges = time_grid()
    b1 = site_baseline_bins(time, status == 1, x1, edges)
    b2 = site_baseline_bins(time, status == 2, x2, edges)
    return CompetingBaselines("os", BaselineHazard.from_bins(b1), BaselineHazard.from_bins(b2), b1 if bins else None, b2)


def test_incidence_is_below_the_world_without_the_competing_event_and_intervals_hold_it():
    time, status, x1, x2 = competing_cohort(600, 3)
    baselines = fitted_baselines(time, status, x1, x2)
    horizons = [365.25, 1826.25]
    result = predict_incidence(x1[:20], x2[:20], baselines, horizons, n_boot=100)
    without = 1 - baselines.event.survival(x1[:20], np.array(horizons))
    assert np.all(result.risk < without) and np.all(result.risk > 0)
    assert np.all(result.risk_low <= result.risk + 1e-12) and np.all(result.risk + 1e-12 >= result.risk_low)
    assert np.all(result.risk_high >= result.risk - 1e-12) and np.any(result.risk_high > result.risk_low)
    assert np.all(np.diff(result.survival, axis=1) <= 1e-12)  # 1 - F decreases


def test_a_correct_model_is_calibrated_and_an_overconfident_one_has_a_slope_below_one():
    time, status, x1, x2 = competing_cohort(1500, 4)
    baselines = fitted_baselines(time, status, x1, x2, bins=False)
    horizon = 1826.25
    right = cumulative_incidence(x1, x2, baselines.event, baselines.competing, np.array([horizon]))[:, 0]
    fit = incidence_calibration(right, time, status, horizon)
    assert fit.slope == pytest.approx(1.0, abs=0.15) and fit.intercept == pytest.approx(0.0, abs=0.1)
    assert fit.observed_expected == pytest.approx(1.0, abs=0.08)
    doubled = fitted_baselines(time, status, 2 * x1, x2, bins=False)
    extreme = cumulative_incidence(2 * x1, x2, doubled.event, doubled.competing, np.array([horizon]))[:, 0]
    assert incidence_calibration(extreme, time, status, horizon).slope == pytest.approx(0.5, abs=0.12)
    # the world-without-death risk overstates the observed incidence
    without = 1 - baselines.event.survival(x1, np.array([horizon]))[:, 0]
    assert incidence_calibration(without, time, status, horizon).observed_expected < 0.9


def test_pseudo_observations_average_to_the_incidence_and_groups_follow_the_prediction():
    time, status, x1, x2 = competing_cohort(300, 5)
    pseudo = pseudo_observations(time, status, 1826.25)
    assert pseudo.mean() == pytest.approx(aalen_johansen(time, status, 1826.25), abs=0.01)
    groups = incidence_groups(x1, time, status, 1826.25, groups=3)
    assert groups.n.sum() == 300 and groups.observed[0] < groups.observed[-1]


def test_decision_curve_treat_all_is_the_aalen_johansen_incidence():
    time, status, x1, _ = competing_cohort(300, 6)
    predicted = 0.2 + 0.1 * np.tanh(x1)  # everyone above the lowest thresholds
    curve = incidence_decision_curve(predicted, time, status, 1826.25, thresholds=(0.05, 0.25))
    f = aalen_johansen(time, status, 1826.25)
    assert curve.treat_all[0] == pytest.approx(f - (1 - f) * 0.05 / 0.95)
    assert curve.model[0] == pytest.approx(curve.treat_all[0])
    assert curve.model[1] != pytest.approx(curve.treat_all[1])


def test_calibration_without_an_event_before_the_horizon_is_refused():
    with pytest.raises(ValueError, match="no event before the horizon"):
        incidence_calibration(np.full(3, 0.1), np.array([10.0, 20, 30]), np.array([0, 2, 0]), 25.0)


def test_incidence_brier_without_competing_events_is_scikit_survivals_integrated_brier():
    from sksurv.metrics import integrated_brier_score
    from sksurv.util import Surv

    time, status, x1, _ = competing_cohort(400, 7, rate2=1e-12)
    assert not np.any(status == 2)
    times = np.linspace(200, 2000, 15)
    survival = np.exp(-np.outer(4e-4 * np.exp(x1), times))
    ours = integrated_incidence_brier(time, status, 1 - survival, times, (time, status))
    surv = Surv.from_arrays(status == 1, time)
    assert ours == pytest.approx(integrated_brier_score(surv, surv, survival, times), rel=1e-3)


def test_incidence_brier_prefers_the_incidence_to_one_minus_s_when_death_competes():
    time, status, x1, x2 = competing_cohort(800, 8, rate2=8e-4)
    baselines = fitted_baselines(time, status, x1, x2, bins=False)
    times = np.linspace(200, 2500, 15)
    incidence = cumulative_incidence(x1, x2, baselines.event, baselines.competing, times)
    without = 1 - baselines.event.survival(x1, times)
    brier = [integrated_incidence_brier(time, status, p, times, (time, status)) for p in (incidence, without)]
    assert brier[0] < brier[1]
