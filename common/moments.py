"""Federated standardisation of numeric features from per-site sums (no row leaves a site).

Each site sends, per feature, the count of non-missing values, their sum and their sum of
squares; the server adds them up. mean = S1 / n, var = S2 / n - mean^2 (population variance),
which equals the variance of the pooled column exactly (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def site_moments(values: np.ndarray) -> dict[str, list[float]]:
    """Per-column n, sum, sum of squares of a [N, D] array (NaN = missing)."""
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    return {
        "n": present.sum(axis=0).astype(float).tolist(),
        "sum": filled.sum(axis=0).tolist(),
        "sumsq": (filled**2).sum(axis=0).tolist(),
    }


def combine_moments(per_site: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, list[float]]:
    """Global mean and standard deviation per column from the sites' moments (std 1 where undefined)."""
    n = np.sum([np.asarray(s["n"], dtype=float) for s in per_site], axis=0)
    s1 = np.sum([np.asarray(s["sum"], dtype=float) for s in per_site], axis=0)
    s2 = np.sum([np.asarray(s["sumsq"], dtype=float) for s in per_site], axis=0)
    safe_n = np.maximum(n, 1.0)
    mean = s1 / safe_n
    var = np.maximum(s2 / safe_n - mean**2, 0.0)
    std = np.sqrt(var)
    std = np.where(std > 1e-12, std, 1.0)
    return {"mean": mean.tolist(), "std": std.tolist(), "n": n.tolist()}
