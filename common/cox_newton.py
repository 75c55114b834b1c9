"""Newton steps of a ridge-penalised Cox model fitted across sites from aggregates.

Each site's training patients are one stratum (as everywhere in stsfl). At coefficients beta a site
sends, per endpoint, the score U = sum over events (x_i - xbar_i) and the information
I = sum over events (sum_R w_j x_j x_j^T / W - xbar_i xbar_i^T) of its Breslow partial likelihood
(w_j = exp(x_j . beta) over the risk set R of event i, xbar_i the w-weighted mean), with its event
count: sums over patients, like the clinical moments of the statistics phase, never a patient's
row or time. The coordinator adds them up and takes the Newton step of the objective
-loglik / events + l2/2 ||beta||^2 (the linear-cox task's objective), which from beta = 0 reaches
the pooled stratified fit in a few steps (the objective is convex; the ridge keeps the
information invertible when a category is absent).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CoxScore:
    """A site's (or the federation's) score [D], information [D, D], events and log-likelihood at beta."""

    score: np.ndarray
    information: np.ndarray
    events: int
    loglik: float

    def to_dict(self) -> dict:
        return {
            "score": self.score.tolist(),
            "information": self.information.tolist(),
            "events": self.events,
            "loglik": self.loglik,
        }

    @staticmethod
    def from_dict(data: dict) -> CoxScore:
        return CoxScore(
            np.asarray(data["score"], float), np.asarray(data["information"], float), int(data["events"]), float(data["loglik"])
        )

    @staticmethod
    def total(parts: Iterable[CoxScore]) -> CoxScore:
        parts = list(parts)
        return CoxScore(
            sum(p.score for p in parts),
            sum(p.information for p in parts),
            sum(p.events for p in parts),
            sum(p.loglik for p in parts),
        )


def _risk_sets(x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray):
    """Rows by decreasing time: (x, event, w = exp(eta - max eta), cumulative w, each event's risk-set
    end, the log-likelihood)."""
    order = np.argsort(-time, kind="stable")
    x, time, event = x[order], time[order], event[order]
    eta = x @ beta
    w = np.exp(eta - eta.max())  # a common factor cancels in every ratio below
    cum_w = np.cumsum(w)
    # The risk set of a time holds everyone with that time or later: the last index of its tie group.
    last = np.searchsorted(-time, -time, side="right") - 1
    idx = last[event]
    loglik = float((eta[event] - eta.max() - np.log(cum_w[idx])).sum())
    return x, event, w, cum_w, idx, loglik


def _as_arrays(x, time, event) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.asarray(x, float), np.asarray(time, float), np.asarray(event, float) > 0.5


def cox_loglik(x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray) -> float:
    """The Breslow log partial likelihood of one stratum alone (no score or information: O(N D))."""
    x, time, event = _as_arrays(x, time, event)
    return _risk_sets(x, time, event, beta)[5] if event.any() else 0.0


def cox_score(x: np.ndarray, time: np.ndarray, event: np.ndarray, beta: np.ndarray) -> CoxScore:
    """Breslow score and information of one stratum: x [N, D], time [N], event [N] (0/1), beta [D]."""
    x, time, event = _as_arrays(x, time, event)
    dim = x.shape[1]
    if not event.size or not event.any():
        return CoxScore(np.zeros(dim), np.zeros((dim, dim)), 0, 0.0)
    x, event, w, cum_w, idx, loglik = _risk_sets(x, time, event, beta)
    cum_wx = np.cumsum(w[:, None] * x, axis=0)
    cum_wxx = np.cumsum(w[:, None, None] * x[:, :, None] * x[:, None, :], axis=0)
    mean = cum_wx[idx] / cum_w[idx, None]
    score = (x[event] - mean).sum(axis=0)
    information = (cum_wxx[idx] / cum_w[idx, None, None] - mean[:, :, None] * mean[:, None, :]).sum(axis=0)
    return CoxScore(score, information, int(event.sum()), loglik)


def newton_step(total: CoxScore, beta: np.ndarray, l2: float) -> np.ndarray:
    """beta after one Newton step of -loglik / events + l2/2 ||beta||^2 from the summed site parts."""
    if total.events == 0:
        return beta
    gradient = -total.score / total.events + l2 * beta
    hessian = total.information / total.events + l2 * np.eye(len(beta))
    # Least squares: without the ridge a variable that never varies has no information, and the
    # minimum-norm step leaves its coefficient where it is instead of failing.
    return beta - np.linalg.lstsq(hessian, gradient, rcond=None)[0]
