"""Absolute-risk prediction settings: the federated baseline hazard's time grid, the horizons."""

from __future__ import annotations

from pydantic import Field, PositiveFloat

from stsfl.common.config.loader import StrictModel


class BaselineGridConfig(StrictModel):
    """The coarse time grid every site bins its events and risk sums on (never exact event times)."""

    bin_days: PositiveFloat = Field(365.25 / 12, description="bin width in days (default: one month)")
    max_years: PositiveFloat = Field(20.0, description="the grid covers follow-up up to this many years")


class PredictionConfig(StrictModel):
    """Baseline hazard after the last round, and what a prediction reports."""

    baseline: bool = Field(True, description="query the training sites for the baseline hazard after the last round")
    grid: BaselineGridConfig = BaselineGridConfig()
    horizons_years: list[PositiveFloat] = Field([1.0, 3.0, 5.0], min_length=1)
