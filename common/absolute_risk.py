"""Absolute predictions from a log-risk and the federated baseline hazard.

    S(t | x) = exp(-H0(t) exp(eta(x)))          risk(t | x) = 1 - S(t | x)

Uncertainty: a Poisson bootstrap of the baseline hazard (each bin's pooled event count redrawn,
risk sums fixed; `baseline_hazard.poisson_bootstrap`). It needs only the federation's aggregates,
but it covers the baseline hazard's sampling error alone, not that of the network's weights: the
intervals are a lower bound on the true uncertainty. (An ensemble of the last rounds' models
would cover the weights too; the server keeps only the latest and the selected weights.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stsfl.common.baseline_hazard import DAYS_PER_YEAR, BaselineBins, BaselineHazard, poisson_bootstrap


@dataclass
class AbsoluteRisk:
    """One endpoint for N patients: risk at the horizons [N, H] with its interval, and survival
    curves on `times` [T]: survival [N, T] with its interval."""

    horizons_days: np.ndarray
    risk: np.ndarray
    risk_low: np.ndarray
    risk_high: np.ndarray
    times: np.ndarray
    survival: np.ndarray
    survival_low: np.ndarray
    survival_high: np.ndarray


def horizons_in_days(years: Sequence[float]) -> np.ndarray:
    return np.asarray(years, float) * DAYS_PER_YEAR


N_BOOT = 200  # Poisson-bootstrap draws of the baseline hazard per prediction (sts-client predict, site outputs)


def predict_absolute(
    log_risk: np.ndarray,
    baseline: BaselineHazard,
    horizons_days: Sequence[float],
    bins: BaselineBins | None = None,
    times: np.ndarray | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> AbsoluteRisk:
    """Risks and survival curves of log_risk [N]; intervals from a Poisson bootstrap of `bins`
    (the bins `baseline` was computed from; without them the interval is the point estimate)."""
    eta = np.asarray(log_risk, float).reshape(-1)
    horizons = np.asarray(horizons_days, float)
    times = np.linspace(0.0, max(horizons.max(), 1.0), 121) if times is None else np.asarray(times, float)
    grid = np.concatenate([horizons, times])
    scale = np.exp(eta)[:, None]  # [N, 1]
    surv = np.exp(-scale * baseline.at(grid)[None, :])
    if bins is not None and n_boot > 0:
        draws = poisson_bootstrap(bins, n_boot, seed)  # [B, E + 1]
        h_draws = np.stack([np.interp(grid, bins.edges, d) for d in draws])  # [B, G]
        boot = np.exp(-scale[None, :, :] * h_draws[:, None, :])  # [B, N, G]
        alpha = (1 - level) / 2
        low, high = np.quantile(boot, [alpha, 1 - alpha], axis=0)
    else:
        low = high = surv
    h = len(horizons)
    return AbsoluteRisk(
        horizons_days=horizons,
        risk=1 - surv[:, :h],
        risk_low=1 - high[:, :h],
        risk_high=1 - low[:, :h],
        times=times,
        survival=surv[:, h:],
        survival_low=low[:, h:],
        survival_high=high[:, h:],
    )


def group_survival(baseline: BaselineHazard, centres: np.ndarray, weights: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Mean model survival [T] of a group described by log-risk bin centres and weights summing to 1."""
    return np.asarray(weights, float) @ baseline.survival(centres, times)
