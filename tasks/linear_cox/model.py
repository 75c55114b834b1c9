"""The linear Cox model of the clinical-only federation (as FLamby's TCGA-BRCA baseline).

log-risk = x . beta + b, for standardised features x [B, D] -> [B, 1] (one endpoint). The bias
does not change the Cox partial likelihood; it is kept so the parameter layout matches FLamby's
`nn.Linear(D, 1)` baseline.
"""

from __future__ import annotations

import torch


class LinearCox(torch.nn.Module):
    """x [B, D] -> log-risk [B, 1]."""

    def __init__(self, n_features: int):
        super().__init__()
        self.fc = torch.nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def build_linear_cox(n_features: int, seed: int) -> LinearCox:
    """The initial model, identical on every machine for the same seed."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LinearCox(n_features)
    torch.random.set_rng_state(generator_state)
    return model
