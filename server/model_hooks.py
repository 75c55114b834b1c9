"""What the server needs to know about the model of a federation's `task`.

- `combine_statistics`: the global statistics from every site's reply to the statistics query
  (for `linear-cox`: feature means and standard deviations from per-site moments);
- `initial_arrays`: the initial global weights, built from the global statistics and the seed;
- `blend_weights`: the next round's gradient-blending weights from the sites' per-head losses
  (None for a single-head model).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stsfl.common.config import FederationConfig
from stsfl.common.moments import combine_moments


class FederationHooks:
    """Task-specific server pieces for one federation."""

    def __init__(self, fed: FederationConfig):
        self.fed = fed

    def schema_json(self) -> Any:
        return {}

    def site_counts(self, per_site: dict[str, dict]) -> dict[str, dict]:
        """Patients and events per endpoint of each site (training split)."""
        return {site: stats["counts"] for site, stats in per_site.items()}

    def combine_statistics(self, per_site: dict[str, dict]) -> dict[str, Any]:
        training = {s: per_site[s] for s in self.fed.training_sites}
        features = {tuple(stats["features"]) for stats in per_site.values()}
        if len(features) != 1:
            raise ValueError("the sites' tables have different feature columns; every site must use the same columns")
        combined = combine_moments([stats["moments"] for stats in training.values()])
        combined["features"] = list(next(iter(features)))
        return combined

    def initial_arrays(self, statistics: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
        from stsfl.common.linear_cox import build_linear_cox

        model = build_linear_cox(len(statistics["mean"]), seed)
        return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    def blend_weights(self, per_site: dict[str, dict[str, float]], previous: Any) -> Any:
        return None
