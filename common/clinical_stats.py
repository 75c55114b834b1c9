"""Federated statistics of the clinical variables: per-site aggregates in, global statistics out.

A site sends `ClinicalSums` (counts, sums and sums of squares of continuous and binary
variables; per-category counts of categorical variables): aggregates only, never a row. The
server adds them up with `combine_clinical_sums` and sends the `GlobalClinicalStats` back; each
site then encodes its table with them (stsfl.client.data.clinical_encoding.apply_global_stats).
Pooled mean = S1 / n; pooled population variance = S2 / n - mean^2, equal to the variance of the
concatenated columns (up to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from stsfl.common.config.schema import ClinicalSchema


@dataclass
class ClinicalSums:
    """One site's aggregates. Numeric (continuous and binary) variables: name -> value over the
    non-missing values; categorical: name -> {category: count}; missing: name -> count."""

    n_patients: int
    count: dict[str, float] = field(default_factory=dict)
    total: dict[str, float] = field(default_factory=dict)
    total_sq: dict[str, float] = field(default_factory=dict)
    category_counts: dict[str, dict[str, float]] = field(default_factory=dict)
    missing: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able form for the wire."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClinicalSums:
        return cls(**data)


@dataclass
class GlobalClinicalStats:
    """Federation-wide statistics: mean/std of numeric variables and category frequencies."""

    n_patients: int
    mean: dict[str, float]
    std: dict[str, float]
    category_freq: dict[str, dict[str, float]]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GlobalClinicalStats:
        return cls(**data)


def combine_clinical_sums(per_site: Sequence[ClinicalSums], schema: ClinicalSchema) -> GlobalClinicalStats:
    """Pool site aggregates. A variable nobody measured gets mean 0 / std 1 (the identity);
    a constant variable gets std 1 so z-scoring never divides by zero."""
    mean: dict[str, float] = {}
    std: dict[str, float] = {}
    freq: dict[str, dict[str, float]] = {}
    for var in schema.variables:
        if var.kind == "categorical":
            counts = {c: sum(s.category_counts.get(var.name, {}).get(c, 0.0) for s in per_site) for c in var.categories or []}
            n = sum(counts.values())
            freq[var.name] = {c: (k / n if n else 0.0) for c, k in counts.items()}
            continue
        n = sum(s.count.get(var.name, 0.0) for s in per_site)
        s1 = sum(s.total.get(var.name, 0.0) for s in per_site)
        s2 = sum(s.total_sq.get(var.name, 0.0) for s in per_site)
        mu = s1 / n if n else 0.0
        sd = math.sqrt(max(s2 / n - mu * mu, 0.0)) if n else 1.0
        mean[var.name] = mu
        std[var.name] = sd if sd > 1e-12 else 1.0
    return GlobalClinicalStats(sum(s.n_patients for s in per_site), mean, std, freq)
