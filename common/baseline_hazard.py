"""Federated Breslow baseline hazard from binned site aggregates (one endpoint at a time).

A site never sends event times (exact unique times identify patients). On a time grid shared by
the federation (`time_grid`: edges 0 = e_0 < e_1 < ... < e_B in days, default monthly), each site
sends per bin b = (e_b, e_{b+1}]:

    events[b]        number of events in the bin
    risk_sum[b]      sum over the patients at risk in the bin of exp(log-risk) x the share of the
                     bin they are at risk, clip((T_j - e_b) / (e_{b+1} - e_b), 0, 1)

The server adds the sites' bins (pooled) or keeps them apart (stratified by site) and takes

    H0(e_{b+1}) = sum_{c <= b} events[c] / risk_sum[c]

which is the piecewise-exponential maximum-likelihood baseline (constant hazard inside a bin).
When the grid has an edge at every distinct observed time (events and censorings: the "exact"
grid), nobody leaves the risk set inside a bin, risk_sum[b] is the Breslow denominator
sum_{T_j >= e_{b+1}} exp(eta_j), and H0 is exactly Breslow's estimator at the event times (what
lifelines' `CoxPHFitter.baseline_cumulative_hazard_` returns for the same linear predictor).
Between edges H0 is linear (constant hazard in the bin); beyond the grid it stays constant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

DAYS_PER_YEAR = 365.25
MONTH_DAYS = DAYS_PER_YEAR / 12


def time_grid(bin_days: float = MONTH_DAYS, max_days: float = 20 * DAYS_PER_YEAR) -> np.ndarray:
    """Edges [B + 1] from 0 to at least `max_days` in steps of `bin_days` (the shared coarse grid)."""
    if bin_days <= 0 or max_days <= 0:
        raise ValueError(f"bin_days and max_days must be positive, got {bin_days}, {max_days}")
    n_bins = int(np.ceil(max_days / bin_days - 1e-9))
    return np.arange(n_bins + 1, dtype=float) * bin_days


def exact_grid(time: np.ndarray) -> np.ndarray:
    """Edges at every distinct observed time (plus 0): the grid on which the bins give Breslow exactly.
    Only for tests and pooled reference computations - it is made of patients' times."""
    return np.concatenate([[0.0], np.unique(np.asarray(time, float))])


@dataclass
class BaselineBins:
    """One site's (or the pooled) aggregates of one endpoint: events and risk_sum [B] on `edges` [B + 1]."""

    edges: np.ndarray
    events: np.ndarray
    risk_sum: np.ndarray

    def __add__(self, other: BaselineBins) -> BaselineBins:
        if self.edges.shape != other.edges.shape or not np.allclose(self.edges, other.edges):
            raise ValueError("baseline bins on different time grids cannot be combined")
        return BaselineBins(self.edges, self.events + other.events, self.risk_sum + other.risk_sum)

    def to_dict(self) -> dict:
        return {"edges": self.edges.tolist(), "events": self.events.tolist(), "risk_sum": self.risk_sum.tolist()}

    @staticmethod
    def from_dict(data: Mapping) -> BaselineBins:
        edges = np.asarray(data["edges"], float)
        events, risk_sum = np.asarray(data["events"], float), np.asarray(data["risk_sum"], float)
        if events.shape != (len(edges) - 1,) or risk_sum.shape != events.shape:
            raise ValueError(
                f"baseline bins: {len(edges)} edges need {len(edges) - 1} events and risk sums, "
                f"got {events.shape} and {risk_sum.shape}"
            )
        return BaselineBins(edges, events, risk_sum)


def site_baseline_bins(
    time: np.ndarray, event: np.ndarray, log_risk: np.ndarray, edges: np.ndarray, min_at_risk: int = 0
) -> BaselineBins:
    """A site's bins of one endpoint. time, event, log_risk: [N] (days, 0/1, the model's log-risk).
    Events after the last edge are not counted (the grid covers the follow-up the federation uses).
    Bins where fewer than `min_at_risk` patients are at risk are sent empty (no events, no risk
    sum): with one patient at risk a bin's risk sum is that patient's relative risk."""
    time, log_risk = np.asarray(time, float), np.asarray(log_risk, float)
    is_event = np.asarray(event) > 0.5
    edges = np.asarray(edges, float)
    widths = np.diff(edges)
    # Subtracting the largest log-risk would change the scale of the bins per site; exp is safe for
    # the log-risks a Cox network produces (|eta| < 700).
    weight = np.exp(log_risk)
    share = np.clip((time[:, None] - edges[None, :-1]) / widths[None, :], 0.0, 1.0)  # [N, B]
    risk_sum = weight @ share
    # Right-closed bins (e_b, e_{b+1}]: an event at e_{b+1} falls in bin b.
    index = np.searchsorted(edges, time[is_event], side="left") - 1
    index = index[(index >= 0) & (index < len(widths))]
    events = np.bincount(index, minlength=len(widths)).astype(float)
    small = (share > 0).sum(axis=0) < min_at_risk
    events[small], risk_sum[small] = 0.0, 0.0
    return BaselineBins(edges, events, risk_sum)


def combine_bins(per_site: Iterable[BaselineBins]) -> BaselineBins:
    """Pooled bins: events and risk sums add up over sites."""
    sites = list(per_site)
    if not sites:
        raise ValueError("no site bins to combine")
    total = sites[0]
    for bins in sites[1:]:
        total = total + bins
    return total


@dataclass
class BaselineHazard:
    """Cumulative baseline hazard H0 at the grid edges: cumulative [B + 1], cumulative[0] = 0."""

    edges: np.ndarray
    cumulative: np.ndarray

    @staticmethod
    def from_bins(bins: BaselineBins) -> BaselineHazard:
        with np.errstate(divide="ignore", invalid="ignore"):
            increments = np.where(bins.risk_sum > 0, bins.events / bins.risk_sum, 0.0)
        return BaselineHazard(bins.edges, np.concatenate([[0.0], np.cumsum(increments)]))

    def at(self, times: np.ndarray) -> np.ndarray:
        """H0(t) (linear inside a bin, constant beyond the grid), same shape as `times`."""
        return np.interp(np.asarray(times, float), self.edges, self.cumulative)

    def survival(self, log_risk: np.ndarray, times: np.ndarray) -> np.ndarray:
        """S(t | eta) = exp(-H0(t) exp(eta)): log_risk [N], times [T] -> [N, T]."""
        return np.exp(-np.outer(np.exp(np.asarray(log_risk, float)), self.at(times)))

    def to_dict(self) -> dict:
        return {"edges": self.edges.tolist(), "cumulative": self.cumulative.tolist()}

    @staticmethod
    def from_dict(data: Mapping) -> BaselineHazard:
        return BaselineHazard(np.asarray(data["edges"], float), np.asarray(data["cumulative"], float))


def poisson_bootstrap(bins: BaselineBins, n_boot: int, seed: int = 0) -> np.ndarray:
    """Cumulative baselines [n_boot, B + 1] with each bin's event count redrawn from Poisson(events[b])
    and the risk sums held fixed: the sampling uncertainty of the baseline hazard given the model
    (the log-risks' own uncertainty is not in it). Needs only the combined bins."""
    rng = np.random.default_rng(seed)
    draws = rng.poisson(np.broadcast_to(bins.events, (n_boot, len(bins.events)))).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        increments = np.where(bins.risk_sum > 0, draws / bins.risk_sum, 0.0)
    return np.concatenate([np.zeros((n_boot, 1)), np.cumsum(increments, axis=1)], axis=1)
