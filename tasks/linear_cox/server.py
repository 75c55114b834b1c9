"""Task `linear-cox`, server side: feature moments combined into the global standardisation, the
seeded linear model, and the penalised objective shown on the round line (convergence)."""

from __future__ import annotations

from typing import Any

import numpy as np

from stsfl.common.config import FederationConfig


def numpy_state(model) -> dict[str, np.ndarray]:
    """A torch module's state as numpy arrays (the coordinator's global weights)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


class LinearCoxServer:
    """Task `linear-cox`: the server side every task starts from."""

    def __init__(self, fed: FederationConfig):
        self.fed = fed

    def schema_json(self) -> Any:
        return {}

    def site_counts(self, per_site: dict[str, dict]) -> dict[str, dict]:
        """Patients and events per endpoint of each site (training split)."""
        return {site: stats["counts"] for site, stats in per_site.items()}

    def combine_statistics(self, per_site: dict[str, dict]) -> dict[str, Any]:
        from stsfl.common.moments import combine_moments

        features = {tuple(stats["features"]) for stats in per_site.values()}
        if len(features) != 1:
            raise ValueError("the sites' tables have different feature columns; every site must use the same columns")
        combined = combine_moments([per_site[s]["moments"] for s in self.fed.training_sites])
        combined["features"] = list(next(iter(features)))
        return combined

    def initial_arrays(self, statistics: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
        from stsfl.tasks.linear_cox.model import build_linear_cox

        return numpy_state(build_linear_cox(len(statistics["mean"]), seed))

    def initial_blend_weights(self) -> dict[str, float] | None:
        return None

    def objective(self, pooled_loss: float | None, arrays: dict[str, np.ndarray], l2_penalty: float) -> float | None:
        """The penalised training objective of the global model `arrays` from the sites' pooled
        loss before local training (events-weighted mean Cox loss + l2/2 ||beta||^2)."""
        if pooled_loss is None:
            return None
        return pooled_loss + l2_penalty / 2 * float((arrays["fc.weight"].astype(np.float64) ** 2).sum())

    def update_blend(self, server_round: int, blend_stats: dict[str, dict], state: dict | None) -> tuple[Any, Any]:
        return None, None
