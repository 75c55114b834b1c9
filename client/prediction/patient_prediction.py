"""What `sts-client predict` computes for one patient (read by the patient page and the CSV)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stsfl.common.absolute_risk import AbsoluteRisk


@dataclass
class EndpointPrediction:
    """One endpoint of one patient: log-risk, absolute risks (one patient's row of AbsoluteRisk),
    percentile among the training patients, the cohort's low / high-risk mean survival [T]; for an
    endpoint with a competing event, the crude cumulative incidence (`incidence`, its `survival`
    fields 1 - F) and the competing endpoint's label (`absolute` is then 1 - S: without it)."""

    name: str
    label: str
    log_risk: float
    absolute: AbsoluteRisk
    percentile: float
    cohort_low: np.ndarray
    cohort_high: np.ndarray
    incidence: AbsoluteRisk | None = None
    competing_label: str | None = None


@dataclass
class PatientPrediction:
    pid: str
    used: list[str]
    missing: list[str]
    warnings: list[str]
    endpoints: list[EndpointPrediction]
    figures: dict[str, Path] = field(default_factory=dict)
