"""The coordinator's federation configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from .loader import StrictModel


class FederationConfig(StrictModel):
    """Who takes part, which strategy, how long."""

    name: str = "sts-federation"
    preset: str = "cpu-small"
    sites: list[str]
    holdout: list[str] = []
    strategy: Literal["fedavg", "fedprox", "fedadam", "fedbn"] = "fedavg"
    rounds: PositiveInt = 3
    local_epochs: PositiveInt = 1
    seed: int = 0
    min_sites: PositiveInt = Field(1, description="quorum: a round completes with at least this many sites")
