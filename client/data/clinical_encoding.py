"""Clinical rows -> the encoded vector [C] (layout and missing rule: stsfl.common.clinical_features),
and the site's side of the federated statistics."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from stsfl.client.data.clinical_table import ClinicalRecord
from stsfl.common.clinical_features import clinical_dim
from stsfl.common.clinical_stats import ClinicalSums, GlobalClinicalStats, combine_clinical_sums
from stsfl.common.config import ClinicalSchema


def site_clinical_sums(records: Iterable[ClinicalRecord], schema: ClinicalSchema) -> ClinicalSums:
    """Aggregates of the site's usable patients (no row leaves: counts and sums only)."""
    records = list(records)
    sums = ClinicalSums(n_patients=len(records))
    for var in schema.variables:
        present = [r.values[var.name] for r in records if r.values[var.name] is not None]
        sums.missing[var.name] = float(len(records) - len(present))
        if var.kind == "categorical":
            sums.category_counts[var.name] = {c: float(sum(v == c for v in present)) for c in var.categories or []}
        else:
            x = np.asarray(present, dtype=np.float64)
            sums.count[var.name] = float(x.size)
            sums.total[var.name] = float(x.sum())
            sums.total_sq[var.name] = float((x * x).sum())
    return sums


def local_clinical_stats(records: Iterable[ClinicalRecord], schema: ClinicalSchema) -> GlobalClinicalStats:
    """Statistics of this site alone (for local runs and validation; a federation sends global ones)."""
    return combine_clinical_sums([site_clinical_sums(records, schema)], schema)


def encode_record(record: ClinicalRecord, stats: GlobalClinicalStats, schema: ClinicalSchema) -> np.ndarray:
    """One patient's clinical vector [C] float32."""
    out: list[float] = []
    for var in schema.variables:
        value = record.values[var.name]
        if var.kind == "categorical":
            out += [1.0 if value == c else 0.0 for c in var.categories or []]
        elif var.kind == "binary":
            out.append(stats.mean[var.name] if value is None else float(value))
        else:
            out.append(0.0 if value is None else (float(value) - stats.mean[var.name]) / stats.std[var.name])
        out.append(1.0 if value is None else 0.0)
    return np.asarray(out, dtype=np.float32)


def apply_global_stats(records: Iterable[ClinicalRecord], stats: GlobalClinicalStats, schema: ClinicalSchema) -> np.ndarray:
    """Encode patients with the federation's statistics -> [N, C] float32."""
    rows = [encode_record(r, stats, schema) for r in records]
    return np.stack(rows) if rows else np.zeros((0, clinical_dim(schema)), dtype=np.float32)
