"""A histogram of log-risks on fixed edges: what a site may share about its risk distribution.

The edges are fixed in advance (not data-dependent) and wide; values outside fall into the end
bins. From the pooled counts the server (or a prediction) reads risk percentiles and the
model-based mean survival curves of the cohort's lower and upper risk halves.
"""

from __future__ import annotations

import numpy as np

EDGES = np.linspace(-10.0, 10.0, 201)  # 0.1 wide bins of log-risk


def risk_histogram(log_risk: np.ndarray) -> np.ndarray:
    """Counts [len(EDGES) - 1] of `log_risk` [N] (clipped into the outer bins)."""
    clipped = np.clip(np.asarray(log_risk, float), EDGES[0], EDGES[-1])
    return np.histogram(clipped, bins=EDGES)[0].astype(np.int64)


def centres() -> np.ndarray:
    return (EDGES[:-1] + EDGES[1:]) / 2


def percentile_of(log_risk: float, counts: np.ndarray) -> float:
    """Share (0-100) of the histogram's patients with a lower log-risk (half of the own bin)."""
    counts = np.asarray(counts, float)
    b = int(np.clip(np.searchsorted(EDGES, log_risk, side="right") - 1, 0, len(counts) - 1))
    return float(100.0 * (counts[:b].sum() + 0.5 * counts[b]) / max(counts.sum(), 1.0))


def risk_halves(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights over the bin centres [len(EDGES) - 1] of the lower and the upper half of the
    patients (the median bin split between them), each summing to 1."""
    counts = np.asarray(counts, float)
    total = counts.sum()
    if total <= 0:
        raise ValueError("empty risk histogram")
    before = np.concatenate([[0.0], np.cumsum(counts)[:-1]])
    low = np.clip(total / 2 - before, 0.0, counts)  # the part of each bin below the median
    high = counts - low
    return low / low.sum(), high / max(high.sum(), 1e-12)
