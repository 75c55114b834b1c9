"""Negative log Cox partial likelihood for K endpoints, with Breslow or Efron handling of ties.

The risk set is the set of patients passed in one call. With a mini-batch that is the batch
(an approximation of the site's risk set; say so where it is used); pass the whole site (or its
cached embeddings) to get the site's stratum as the risk set - a Cox model stratified by centre.

Patients whose endpoint is missing (`observed` False) are neither events nor members of any
risk set for that endpoint. Everything is computed in log space (log-sum-exp) and in at least
float32, so large log-risks neither overflow nor underflow.
"""

from __future__ import annotations

from typing import Literal

import torch

Ties = Literal["efron", "breslow"]
Reduction = Literal["mean", "sum"]

# Stand-in for log(0) inside masked log-sum-exps: finite so that gradients stay finite (a true
# -inf gives exp(-inf - -inf) = nan in the backward pass of an empty row).
_LOG_ZERO = -1e30


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(-1) if x.dim() == 1 else x


def _masked_logsumexp(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log sum_j exp(values[..., j]) over mask[..., i, j]; values [K, 1, B], mask [K, B, B] -> [K, B]."""
    return torch.logsumexp(torch.where(mask, values, torch.full_like(values, _LOG_ZERO)), dim=-1)


def cox_event_terms(
    log_risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    observed: torch.Tensor | None = None,
    ties: Ties = "efron",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patient terms of the negative log partial likelihood.

    Shapes: log_risk, time, event, observed [B, K] (or [B] for one endpoint).
    Returns (terms [B, K], is_event [B, K] bool): terms[i, k] is patient i's contribution
    -(eta_i - log(denominator_i)) if i is an observed event of endpoint k, else 0. Summing the
    terms over patients gives the negative log partial likelihood of each endpoint.

    Efron: within a group of d tied events at time t, the l-th event (l = 0..d-1, in patient
    order) has denominator sum_{R(t)} exp(eta) - l/d * sum_{D(t)} exp(eta). Breslow: every tied
    event has denominator sum_{R(t)} exp(eta).
    """
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    eta = _as_2d(log_risk)
    if eta.dtype not in (torch.float32, torch.float64):
        eta = eta.float()  # AMP: the loss is never computed in half precision
    t = _as_2d(time).to(eta.dtype)
    if observed is None:
        observed = torch.ones_like(t, dtype=torch.bool)
    obs = _as_2d(observed).bool()
    is_event = obs & (_as_2d(event) > 0.5)
    if not (eta.shape == t.shape == is_event.shape):
        raise ValueError(f"log_risk {tuple(eta.shape)}, time {tuple(t.shape)} and event {tuple(is_event.shape)} differ")

    # Endpoint-major [K, B]; pairwise matrices [K, B(i), B(j)].
    eta_k, t_k, obs_k, ev_k = eta.T, t.T, obs.T, is_event.T
    at_risk = (t_k.unsqueeze(1) >= t_k.unsqueeze(2)) & obs_k.unsqueeze(1)  # j at risk at t_i
    eta_j = eta_k.unsqueeze(1)
    log_denominator = _masked_logsumexp(eta_j, at_risk)

    if ties == "efron":
        tied = (t_k.unsqueeze(1) == t_k.unsqueeze(2)) & ev_k.unsqueeze(1)  # j an event tied with t_i
        n_tied = tied.sum(-1).clamp(min=1).to(eta.dtype)
        index = torch.arange(eta.shape[0], device=eta.device)
        before = index.view(1, 1, -1) < index.view(1, -1, 1)
        # l: tied events listed before i; 0 for non-events, whose terms are discarded but must keep
        # finite gradients (a censored, unobserved row tied with an event would reach log1p(-1)).
        rank = torch.where(ev_k, (tied & before).sum(-1).to(eta.dtype), torch.zeros_like(eta_k))
        log_tied = _masked_logsumexp(eta_j, tied)
        # log(S_R - l/d S_D) = log S_R + log1p(-(l/d) S_D/S_R); D is within R and l/d < 1, so the
        # argument of log1p stays above -1 + 1/d.
        ratio = torch.exp(torch.clamp(log_tied - log_denominator, max=0.0))
        log_denominator = log_denominator + torch.log1p(-(rank / n_tied) * ratio)

    terms = torch.where(ev_k, log_denominator - eta_k, torch.zeros_like(eta_k))
    return terms.T, is_event


def cox_nll(
    log_risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    observed: torch.Tensor | None = None,
    ties: Ties = "efron",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Negative log partial likelihood per endpoint, [K].

    reduction "mean": divided by the endpoint's number of observed events (0 when it has none,
    still attached to the graph); "sum": the plain sum over events (for pooling across batches
    or sites: divide the summed sums by the summed event counts, see `count_events`).
    """
    terms, is_event = cox_event_terms(log_risk, time, event, observed, ties)
    total = terms.sum(0)
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return total / is_event.sum(0).clamp(min=1).to(total.dtype)


def cox_loss(
    log_risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    observed: torch.Tensor | None = None,
    ties: Ties = "efron",
    endpoint_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scalar training loss: the per-endpoint means of `cox_nll`, summed over endpoints (optionally weighted [K])."""
    per_endpoint = cox_nll(log_risk, time, event, observed, ties, reduction="mean")
    if endpoint_weights is not None:
        per_endpoint = per_endpoint * endpoint_weights.to(per_endpoint)
    return per_endpoint.sum()


def count_events(event: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
    """Observed events per endpoint, [K] (int64)."""
    ev = _as_2d(event) > 0.5
    if observed is not None:
        ev = ev & _as_2d(observed).bool()
    return ev.sum(0)
