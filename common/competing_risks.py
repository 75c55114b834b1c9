"""Crude cumulative incidence under a competing event, from federated binned cause-specific baselines.

An endpoint such as distant metastasis (dm) is censored at death (os): death competes with it.
Its network head, trained by a Cox loss in which death censors, estimates the *cause-specific*
hazard h_1(t | x) = h_01(t) exp(eta_1(x)). 1 - exp(-H_1(t | x)) is then the risk in a world
without death; the risk a patient faces is the crude cumulative incidence

    F_1(t | x) = int_0^t S(u- | x) dH_1(u | x),    S(u | x) = exp(-H_1(u | x) - H_2(u | x)),

which also needs the cause-specific hazard of the competing event before the endpoint ("death
without dm"), h_2(t | x) = h_02(t) exp(eta_2(x)). The network has no head for it; we take the OS
head's log-risk as eta_2 (the covariate of a Breslow baseline: the baseline h_02 absorbs the
level, so only the ranking of the OS score is borrowed, see docs/prediction.md) and estimate h_02
from federated bins exactly like h_01 (stsfl.common.baseline_hazard): on the endpoint's own
follow-up, events = the competing events (status 2 of `competing_status`), risk sums of exp(eta_2).

With both baselines piecewise constant inside the bins of the shared grid, F_1 is the product
integral (the Aalen-Johansen form) of the two-cause hazards, exact for constant hazards in a bin:

    S(e_{b+1}) = S(e_b) exp(-(dH_1 + dH_2)),
    F_1(e_{b+1}) = F_1(e_b) + S(e_b) dH_1 / (dH_1 + dH_2) (1 - exp(-(dH_1 + dH_2)))

with dH_c = exp(eta_c) (H_0c(e_{b+1}) - H_0c(e_b)). Horizons inside a bin are added to the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stsfl.common.absolute_risk import AbsoluteRisk
from stsfl.common.baseline_hazard import BaselineBins, BaselineHazard, poisson_bootstrap

EVENT, COMPETING = 1, 2


def competing_status(time: np.ndarray, event: np.ndarray, competing_time: np.ndarray, competing_event: np.ndarray) -> np.ndarray:
    """Status [N] of an endpoint with a competing event: 1 the endpoint's event, 2 the competing event
    ended the follow-up (no endpoint event, competing event at or before the endpoint's time: the
    schema's `competing` says such a censoring is the competing event), 0 censored. All inputs [N]."""
    time, competing_time = np.asarray(time, float), np.asarray(competing_time, float)
    is_event = np.asarray(event, float) > 0.5
    ended = (~is_event) & (np.asarray(competing_event, float) > 0.5) & (competing_time <= time)
    return np.where(is_event, EVENT, np.where(ended, COMPETING, 0)).astype(int)


def _increments(hazard: BaselineHazard, grid: np.ndarray) -> np.ndarray:
    return np.diff(hazard.at(grid))


def cumulative_incidence_on(d_event: np.ndarray, d_competing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F_1, S) at the grid edges [..., G + 1] from per-interval cumulative hazards [..., G] of the
    event and the competing event (any leading shape: patients, bootstrap draws)."""
    total = d_event + d_competing
    survival = np.exp(-np.cumsum(total, axis=-1))
    before = np.concatenate([np.ones(total.shape[:-1] + (1,)), survival[..., :-1]], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, d_event / total * -np.expm1(-total), 0.0)
    incidence = np.cumsum(before * share, axis=-1)
    zero = np.zeros(total.shape[:-1] + (1,))
    return np.concatenate([zero, incidence], axis=-1), np.concatenate([zero + 1.0, survival], axis=-1)


def _grid(edges: np.ndarray, times: np.ndarray) -> np.ndarray:
    return np.union1d(np.union1d(edges, times), [0.0])


def cumulative_incidence(
    eta_event: np.ndarray,
    eta_competing: np.ndarray,
    event: BaselineHazard,
    competing: BaselineHazard,
    times: np.ndarray,
) -> np.ndarray:
    """Crude cumulative incidence F_1(t | x) [N, T] at `times` [T] (days) for log-risks [N] of the
    endpoint and of the competing event, given the two cause-specific baselines."""
    times = np.asarray(times, float)
    grid = _grid(event.edges, times)
    d1 = np.outer(np.exp(np.asarray(eta_event, float)), _increments(event, grid))
    d2 = np.outer(np.exp(np.asarray(eta_competing, float)), _increments(competing, grid))
    incidence, _ = cumulative_incidence_on(d1, d2)
    return incidence[:, np.searchsorted(grid, times)]


def _bootstrap_increments(bins: BaselineBins, grid: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    draws = poisson_bootstrap(bins, n_boot, seed)  # [B, E + 1]
    return np.diff(np.stack([np.interp(grid, bins.edges, d) for d in draws]), axis=1)  # [B, G]


@dataclass(frozen=True)
class CompetingBaselines:
    """The two cause-specific baselines of one endpoint with the bins they came from (bins may be
    None: no interval) and the name of the competing endpoint whose log-risk is eta_2."""

    cause: str
    event: BaselineHazard
    competing: BaselineHazard
    event_bins: BaselineBins | None = None
    competing_bins: BaselineBins | None = None


def predict_incidence(
    eta_event: np.ndarray,
    eta_competing: np.ndarray,
    baselines: CompetingBaselines,
    horizons_days: Sequence[float],
    times: np.ndarray | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> AbsoluteRisk:
    """Crude cumulative incidence at the horizons [N, H] with a Poisson-bootstrap interval (both
    cause-specific baselines redrawn, independently; risk sums fixed), and the event-free curve
    1 - F_1(t) on `times` in the `survival` fields (what is left of the endpoint's risk)."""
    eta1, eta2 = (np.asarray(e, float).reshape(-1) for e in (eta_event, eta_competing))
    horizons = np.asarray(horizons_days, float)
    times = np.linspace(0.0, max(horizons.max(), 1.0), 121) if times is None else np.asarray(times, float)
    wanted = np.concatenate([horizons, times])
    point = cumulative_incidence(eta1, eta2, baselines.event, baselines.competing, wanted)
    low = high = point
    if n_boot > 0 and baselines.event_bins is not None and baselines.competing_bins is not None:
        grid = _grid(baselines.event.edges, wanted)
        d1 = _bootstrap_increments(baselines.event_bins, grid, n_boot, seed)  # [B, G]
        d2 = _bootstrap_increments(baselines.competing_bins, grid, n_boot, seed + 1)
        draws, _ = cumulative_incidence_on(
            np.exp(eta1)[None, :, None] * d1[:, None, :], np.exp(eta2)[None, :, None] * d2[:, None, :]
        )  # [B, N, G + 1]
        alpha = (1 - level) / 2
        low, high = np.quantile(draws[:, :, np.searchsorted(grid, wanted)], [alpha, 1 - alpha], axis=0)
    h = len(horizons)
    return AbsoluteRisk(
        horizons_days=horizons,
        risk=point[:, :h],
        risk_low=low[:, :h],
        risk_high=high[:, :h],
        times=times,
        survival=1 - point[:, h:],
        survival_low=1 - high[:, h:],
        survival_high=1 - low[:, h:],
    )
