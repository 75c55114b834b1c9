"""The aggregate survival metrics a site reports about a model it evaluated (only these numbers leave it).

Per endpoint, from log-risks of the evaluated patients (arrays [N]), as `<metric>-<endpoint>` keys:

    eval-events-<e>        events among the evaluated patients
    c-harrell-<e>          Harrell's C
    c-uno-<e>              Uno's IPCW C truncated at the 80th percentile of the evaluated times
    auc-<h>d-<e>           cumulative/dynamic AUC at each configured horizon h (days) inside follow-up
    ibs-<e>                integrated Brier score of S0(t)^exp(risk)

The reference distribution that IPCW weights and the Breslow baseline S0 need is the evaluated
patients themselves: a held-out centre has no training split, and its baseline hazard is not the
federation's (so the IBS measures the calibration of the relative risks under the centre's own
baseline, not of an absolute prediction). A metric that the data leave undefined (no comparable
pair, censoring survival reaching 0, no case before a horizon) is left out, not reported as nan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from stsfl.common.fed_protocol import NUM_EVENTS
from stsfl.common.metrics import harrell_c, integrated_brier, time_dependent_auc, uno_c

DEFAULT_HORIZONS_DAYS = (365.0, 730.0, 1825.0)
UNO_TAU_QUANTILE = 0.8


def horizon_key(endpoint: str, horizon: float) -> str:
    return f"auc-{horizon:g}d-{endpoint}"


def _defined(compute: Callable[[], float]) -> float | None:
    try:
        value = compute()
    except (ValueError, ZeroDivisionError):
        return None
    return float(value) if np.isfinite(value) else None


def endpoint_metrics(
    endpoint: str, time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizons: Sequence[float] = DEFAULT_HORIZONS_DAYS
) -> dict[str, float]:
    """All metrics of one endpoint (patients without the endpoint already removed), keyed as above."""
    time, event, risk = np.asarray(time, float), np.asarray(event, float), np.asarray(risk, float)
    metrics = {f"eval-events-{endpoint}": float((event > 0.5).sum())}
    if (event > 0.5).sum() == 0 or len(time) < 2:
        return metrics
    tau = float(np.quantile(time, UNO_TAU_QUANTILE))
    scalar = {
        f"c-harrell-{endpoint}": lambda: harrell_c(time, event, risk),
        f"c-uno-{endpoint}": lambda: uno_c(time, event, time, event, risk, tau=tau),
        f"ibs-{endpoint}": lambda: integrated_brier(time, event, risk, time, event, risk),
    }
    for key, compute in scalar.items():
        value = _defined(compute)
        if value is not None:
            metrics[key] = value
    try:
        aucs = time_dependent_auc(time, event, time, event, risk, horizons)
    except (ValueError, ZeroDivisionError):
        aucs = {}
    metrics.update({horizon_key(endpoint, h): float(a) for h, a in aucs.items() if np.isfinite(a)})
    return metrics


def site_metrics(
    endpoints: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], horizons: Sequence[float] = DEFAULT_HORIZONS_DAYS
) -> dict[str, float]:
    """`endpoint_metrics` of every endpoint: {endpoint: (time, event, risk)} -> one flat dict."""
    out: dict[str, float] = {}
    for endpoint, (time, event, risk) in endpoints.items():
        out.update(endpoint_metrics(endpoint, time, event, risk, horizons))
    return out


def reported_endpoints(metrics: Mapping[str, float]) -> list[str]:
    """Endpoints present in a site's metrics (every evaluated endpoint has an event count)."""
    return sorted(k.removeprefix("eval-events-") for k in metrics if k.startswith("eval-events-"))


def describe_metrics(metrics: Mapping[str, float]) -> str:
    """One line per site for the screen, e.g. `os: C 0.712, Uno 0.698, AUC 365d 0.74, IBS 0.162, 14 events`."""
    parts = []
    for endpoint in reported_endpoints(metrics):
        shown = [
            f"{label} {metrics[f'{key}-{endpoint}']:.3f}"
            for key, label in (("c-harrell", "C"), ("c-uno", "Uno"))
            if f"{key}-{endpoint}" in metrics
        ]
        suffix = f"d-{endpoint}"
        aucs = sorted((float(k[4 : -len(suffix)]), v) for k, v in metrics.items() if k.startswith("auc-") and k.endswith(suffix))
        shown += [f"AUC {h:g}d {v:.3f}" for h, v in aucs]
        if f"ibs-{endpoint}" in metrics:
            shown.append(f"IBS {metrics[f'ibs-{endpoint}']:.3f}")
        shown.append(f"{metrics[f'eval-events-{endpoint}']:.0f} events")
        parts.append(f"{endpoint}: " + ", ".join(shown))
    return "; ".join(parts)


def events_weighted_mean(sites: dict[str, dict[str, float]], key: str, skip_zero: bool = False) -> float | None:
    """Mean of `key` over the sites that report it, weighted by their `num-events` (floored at 0;
    a plain mean when every weight is 0). `skip_zero` leaves out sites reporting exactly 0 (a site
    without a validation split reports validation losses of 0)."""
    pairs = [
        (float(m[key]), max(float(m.get(NUM_EVENTS, 0.0)), 0.0))
        for m in sites.values()
        if key in m and not (skip_zero and m[key] == 0.0)
    ]
    if not pairs:
        return None
    total = sum(w for _, w in pairs)
    if total <= 0:
        return sum(v for v, _ in pairs) / len(pairs)
    return sum(v * w for v, w in pairs) / total
