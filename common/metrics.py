"""Survival metrics of risk scores (higher risk = earlier event), computed by scikit-survival and lifelines.

Per endpoint, with arrays of shape [N]: Harrell's C, Uno's C (IPCW, censoring estimated on the
training split), cumulative/dynamic time-dependent AUC at horizons (days), the integrated Brier
score of S(t | x) = S0(t)^exp(risk) with S0 the Breslow estimate on the training split, a
median-split risk grouping with its log-rank p-value and Kaplan-Meier curves (PNG), and
percentile-bootstrap confidence intervals over patients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# lifelines and scikit-survival are imported where they are used: importing them takes ~1.5 s, paid
# by every ClientApp process (one per message) that imports this module for its names only.
from stsfl.common.figures import pyplot, save_png


def _surv(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event) > 0.5, time=np.asarray(time, dtype=float))


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index (ties in risk count 1/2)."""
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(np.asarray(event) > 0.5, np.asarray(time, float), np.asarray(risk, float))[0])


def uno_c(train_time, train_event, time, event, risk, tau: float | None = None) -> float:
    """Uno's IPCW concordance truncated at tau (default: the largest training time, where the
    censoring distribution estimated on the training split is still positive)."""
    from sksurv.metrics import concordance_index_ipcw

    tau = float(np.max(train_time)) if tau is None else tau
    return float(concordance_index_ipcw(_surv(train_time, train_event), _surv(time, event), np.asarray(risk, float), tau=tau)[0])


def usable_horizons(horizons: Sequence[float], train_time: np.ndarray, time: np.ndarray) -> np.ndarray:
    """The horizons inside the test follow-up [min, max) and below the largest training time
    (where IPCW weights exist)."""
    h = np.asarray(sorted(horizons), dtype=float)
    return h[(h >= np.min(time)) & (h < np.max(time)) & (h < np.max(train_time))]


def time_dependent_auc(train_time, train_event, time, event, risk, horizons: Sequence[float]) -> dict[float, float]:
    """{horizon: cumulative/dynamic AUC} at the usable horizons (empty if none is usable)."""
    from sksurv.metrics import cumulative_dynamic_auc

    h = usable_horizons(horizons, train_time, time)
    if h.size == 0:
        return {}
    aucs, _ = cumulative_dynamic_auc(_surv(train_time, train_event), _surv(time, event), np.asarray(risk, float), h)
    return {float(t): float(a) for t, a in zip(h, aucs)}


def breslow_survival(train_time, train_event, train_risk, risk, times: np.ndarray) -> np.ndarray:
    """S(t | x) = S0(t)^exp(risk) at `times`, [N, T]; S0 from the Breslow estimator on the training split."""
    from sksurv.linear_model.coxph import BreslowEstimator

    breslow = BreslowEstimator().fit(np.asarray(train_risk, float), np.asarray(train_event) > 0.5, np.asarray(train_time, float))
    return np.stack([fn(times) for fn in breslow.get_survival_function(np.asarray(risk, float))])


def brier_times(train_time, time, n_times: int = 20) -> np.ndarray:
    """The integrated Brier score's grid: between the 10th and 90th percentile of the test times,
    clipped below the largest test and training time (where the censoring weights exist)."""
    lo, hi = np.percentile(time, [10, 90])
    hi = min(hi, np.max(time) * (1 - 1e-9), np.max(train_time) * (1 - 1e-9))
    return np.linspace(lo, hi, n_times)


def integrated_brier_of_survival(train_time, train_event, time, event, survival: np.ndarray, times: np.ndarray) -> float:
    """Integrated Brier score of predicted survival [N, T] at `times` (censoring from the training split)."""
    from sksurv.metrics import integrated_brier_score

    return float(integrated_brier_score(_surv(train_time, train_event), _surv(time, event), survival, times))


def integrated_brier(train_time, train_event, train_risk, time, event, risk, n_times: int = 20) -> float:
    """Integrated Brier score on `brier_times` of S0(t)^exp(risk), S0 the training split's Breslow estimate."""
    times = brier_times(train_time, time, n_times)
    survival = breslow_survival(train_time, train_event, train_risk, risk, times)
    return integrated_brier_of_survival(train_time, train_event, time, event, survival, times)


@dataclass(frozen=True)
class RiskGroups:
    """Median split: `high` marks risk above `threshold`; log-rank test of high vs low."""

    threshold: float
    high: np.ndarray
    logrank_p: float


def risk_groups(time, event, risk, threshold: float | None = None) -> RiskGroups:
    """Split at `threshold` (e.g. the training median; default: the median of `risk`)."""
    risk = np.asarray(risk, float)
    threshold = float(np.median(risk)) if threshold is None else float(threshold)
    high = risk > threshold
    if high.all() or not high.any():
        return RiskGroups(threshold, high, float("nan"))
    from lifelines.statistics import logrank_test

    time, event = np.asarray(time, float), np.asarray(event) > 0.5
    test = logrank_test(time[high], time[~high], event_observed_A=event[high], event_observed_B=event[~high])
    return RiskGroups(threshold, high, float(test.p_value))


def plot_kaplan_meier(time, event, groups: RiskGroups, path: str | Path, title: str) -> Path:
    """Kaplan-Meier curves of the low- and high-risk groups with the log-rank p-value, as a PNG."""
    from lifelines import KaplanMeierFitter

    time, event = np.asarray(time, float), np.asarray(event) > 0.5
    fig, ax = pyplot().subplots(figsize=(5, 4))
    for label, mask, colour in (("low risk", ~groups.high, "tab:blue"), ("high risk", groups.high, "tab:red")):
        if mask.any():
            KaplanMeierFitter().fit(time[mask], event[mask], label=f"{label} (n={mask.sum()})").plot_survival_function(
                ax=ax, color=colour, ci_show=True
            )
    ax.set_xlabel("days")
    ax.set_ylabel("survival probability")
    ax.set_title(f"{title}\nlog-rank p = {groups.logrank_p:.3g}")
    return save_png(fig, path, dpi=120)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_ci(
    metric: Callable[[np.ndarray], float],
    n: int,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile interval of metric(indices) over n_boot resamples of range(n) with replacement;
    resamples where the metric is undefined (raises ValueError / ZeroDivisionError, or is nan) are skipped."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        try:
            value = metric(idx)
        except (ValueError, ZeroDivisionError):
            continue
        if np.isfinite(value):
            values.append(value)
    point = metric(np.arange(n))
    if not values:
        return Interval(point, float("nan"), float("nan"))
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(float(point), float(low), float(high))


def harrell_c_difference(time, event, risk_a, risk_b, n_boot: int = 1000, seed: int = 0) -> Interval:
    """Harrell's C of risk_a minus that of risk_b on the same patients, paired bootstrap interval."""
    time, event, risk_a, risk_b = (np.asarray(x, float) for x in (time, event, risk_a, risk_b))
    return bootstrap_ci(
        lambda i: harrell_c(time[i], event[i], risk_a[i]) - harrell_c(time[i], event[i], risk_b[i]),
        len(time),
        n_boot,
        seed=seed,
    )


@dataclass(frozen=True)
class EndpointSplit:
    """One endpoint of one split: time, event, risk [N] (patients without the endpoint removed)."""

    time: np.ndarray
    event: np.ndarray
    risk: np.ndarray

    @staticmethod
    def from_arrays(time, event, risk, observed=None) -> EndpointSplit:
        keep = np.ones(len(time), bool) if observed is None else np.asarray(observed, bool)
        return EndpointSplit(np.asarray(time, float)[keep], np.asarray(event, float)[keep], np.asarray(risk, float)[keep])


def endpoint_report(
    train: EndpointSplit,
    test: EndpointSplit,
    horizons: Sequence[float] = (365.0, 730.0, 1825.0),
    n_boot: int = 200,
    seed: int = 0,
) -> dict:
    """All metrics of one endpoint: {"n", "events", "harrell_c" (Interval), "uno_c", "td_auc",
    "integrated_brier", "logrank_p"}; the risk-group threshold is the training median."""
    t, e, r = test.time, test.event, test.risk
    report: dict = {"n": int(len(t)), "events": int((e > 0.5).sum())}
    if report["events"] == 0:
        return report
    # Small test sets can leave a metric undefined (no comparable pair, a horizon without cases):
    # that metric is nan, the others stand.
    metrics = {
        "harrell_c": lambda: bootstrap_ci(lambda i: harrell_c(t[i], e[i], r[i]), len(t), n_boot, seed=seed),
        "uno_c": lambda: uno_c(train.time, train.event, t, e, r),
        "td_auc": lambda: time_dependent_auc(train.time, train.event, t, e, r, horizons),
        "integrated_brier": lambda: integrated_brier(train.time, train.event, train.risk, t, e, r),
        "logrank_p": lambda: risk_groups(t, e, r, threshold=float(np.median(train.risk))).logrank_p,
    }
    for name, compute in metrics.items():
        try:
            report[name] = compute()
        except (ValueError, ZeroDivisionError):
            report[name] = float("nan")
    return report
