"""A linear Cox cohort with a known Weibull baseline, for the baseline-hazard and prediction tests."""

from __future__ import annotations

import numpy as np

BETA = (0.8, -0.5, 0.3)
SCALE_DAYS, SHAPE = 1500.0, 1.2


def true_survival(x: np.ndarray, times: np.ndarray, beta=BETA) -> np.ndarray:
    """S(t | x) = exp(-(t / scale)^shape exp(x beta)): x [N, 3], times [T] -> [N, T]."""
    return np.exp(-np.outer(np.exp(np.asarray(x) @ np.asarray(beta)), (np.asarray(times) / SCALE_DAYS) ** SHAPE))


def linear_cohort(n: int, seed: int, beta=BETA, ties_days: float = 0.0):
    """x [n, 3] ~ N(0, 1); Weibull baseline H0(t) = (t / scale)^shape; uniform censoring 200-4000 days.
    ties_days > 0 rounds times up to that resolution (tied event and censoring times)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(beta)))
    eta = x @ np.asarray(beta)
    true_t = SCALE_DAYS * (rng.exponential(size=n) / np.exp(eta)) ** (1 / SHAPE)
    cens = rng.uniform(200, 4000, size=n)
    time, event = np.minimum(true_t, cens), (true_t <= cens).astype(float)
    if ties_days:
        time = np.maximum(np.ceil(time / ties_days) * ties_days, ties_days)
    return x, time, event
