"""Cox losses of the network's heads on one batch (the batch is the risk set)."""

from __future__ import annotations

import torch

from stsfl.common.batch import MODALITIES, SurvivalBatch
from stsfl.common.blending import HeadLossStats
from stsfl.common.cox import Reduction, Ties, count_events, cox_nll


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


def head_loss_stats(
    outputs: dict[str, torch.Tensor],
    time: torch.Tensor,
    event: torch.Tensor,
    endpoint_observed: torch.Tensor,
    modality_present: torch.Tensor,
    ties: Ties = "efron",
) -> HeadLossStats:
    """Per-head loss sums and event counts over N patients taken as ONE risk set (a whole split of a
    site); outputs {head: [N, K]}, labels [N, K], modality_present [N, 3]."""
    labels = SurvivalBatch(
        pids=[],
        mri=torch.empty(0),
        wsi=torch.empty(0),
        wsi_mask=torch.empty(0),
        clinical=torch.empty(0),
        time=time,
        event=event,
        endpoint_observed=endpoint_observed,
        modality_present=modality_present,
    )
    with torch.no_grad():
        sums = head_losses({h: o.float() for h, o in outputs.items()}, labels, ties, reduction="sum")
    counts = head_event_counts(tuple(outputs), labels)
    return HeadLossStats(
        loss_sums={h: tuple(float(x) for x in v) for h, v in sums.items()},
        events={h: tuple(int(x) for x in v) for h, v in counts.items()},
    )
