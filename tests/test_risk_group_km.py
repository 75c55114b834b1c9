"""Risk-group Kaplan-Meier aggregates a site reports, against lifelines on the same patients."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

from stsfl.common.risk_group_km import KM_GRID_DAYS, parse_risk_group_km, risk_group_km


def _cohort(n: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = np.ceil(rng.exponential(900 * np.exp(-risk)))
    event = (rng.uniform(size=n) < 0.7).astype(float)
    return time, event, risk


def test_grid_survival_and_log_rank_match_lifelines():
    time, event, risk = _cohort()
    metrics = risk_group_km("os", time, event, risk)
    high = risk > np.median(risk)
    assert metrics["km-os-high-n"] == high.sum() and metrics["km-os-low-n"] == (~high).sum()
    expected_p = logrank_test(time[high], time[~high], event[high], event[~high]).p_value
    assert metrics["logrank-p-os"] == pytest.approx(expected_p)
    for name, mask in (("low", ~high), ("high", high)):
        km = KaplanMeierFitter().fit(time[mask], event[mask])
        for day in (0, 365, 730):
            if day <= time[mask].max():
                assert metrics[f"km-os-{name}-{day}d"] == pytest.approx(float(km.predict(day)))
        # nothing past the group's last follow-up: the curve is not known there
        assert all(d <= time[mask].max() for d in KM_GRID_DAYS if f"km-os-{name}-{d}d" in metrics)


def test_parse_gives_the_curves_back_and_no_curves_is_none():
    time, event, risk = _cohort(seed=1)
    metrics = {"c-harrell-os": 0.7, **risk_group_km("os", time, event, risk)}
    curves = parse_risk_group_km(metrics, "os")
    days, survival = curves["high"]
    assert days == sorted(days) and days[0] == 0 and survival[0] == 1.0
    assert all(a >= b for a, b in zip(survival, survival[1:]))  # survival never rises
    assert curves["p"] == metrics["logrank-p-os"]
    assert parse_risk_group_km(metrics, "dm") is None
    assert risk_group_km("os", time, event, np.zeros_like(risk)) == {}  # one risk value: no split
    assert risk_group_km("os", time[:9], event[:9], risk[:9]) == {}  # groups of 4 and 5: suppressed
    assert risk_group_km("os", time[:10], event[:10], risk[:10])["km-os-high-n"] == 5
