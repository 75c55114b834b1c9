"""Cox losses of the network's heads on one batch (the batch is the risk set)."""

from __future__ import annotations

import torch

from .batch import MODALITIES, SurvivalBatch
from .cox import Reduction, Ties, count_events, cox_nll


def head_observed(head: str, batch: SurvivalBatch) -> torch.Tensor:
    """[B, K] bool: endpoint observed and, for an auxiliary head, the patient has that modality
    (a modality head knows nothing about patients without it, so they are outside its risk sets)."""
    observed = batch.endpoint_observed.bool()
    if head in MODALITIES:
        observed = observed & batch.modality_present[:, MODALITIES.index(head)].bool().unsqueeze(1)
    return observed


def head_losses(
    outputs: dict[str, torch.Tensor],
    batch: SurvivalBatch,
    ties: Ties = "efron",
    reduction: Reduction = "mean",
) -> dict[str, torch.Tensor]:
    """{head: per-endpoint negative log partial likelihood [K]} for the network's outputs {head: [B, K]}."""
    return {
        head: cox_nll(log_risk, batch.time, batch.event, head_observed(head, batch), ties, reduction)
        for head, log_risk in outputs.items()
    }


def head_event_counts(heads: list[str] | tuple[str, ...], batch: SurvivalBatch) -> dict[str, torch.Tensor]:
    """{head: observed events per endpoint [K]} - the denominators of the mean losses."""
    return {head: count_events(batch.event, head_observed(head, batch)) for head in heads}


def blended_loss(losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Scalar: sum over heads of weight * (per-endpoint losses summed over endpoints)."""
    return sum(weights[head] * loss.sum() for head, loss in losses.items())
