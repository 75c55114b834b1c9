"""Clinical sub-network: an MLP over the encoded clinical vector."""

from __future__ import annotations

from torch import nn

from stsfl.common.config.preset import ClinicalNetConfig


def clinical_mlp(n_inputs: int, cfg: ClinicalNetConfig) -> nn.Sequential:
    """[B, n_inputs] -> [B, out_features]: (Linear, ReLU, Dropout) per hidden width, then Linear.
    No normalisation layer, so it is DP-SGD and FedBN neutral."""
    layers: list[nn.Module] = []
    width = n_inputs
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
        width = hidden
    layers.append(nn.Linear(width, cfg.out_features))
    return nn.Sequential(*layers)
