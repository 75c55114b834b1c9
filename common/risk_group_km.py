"""Kaplan-Meier curves of a site's predicted low- and high-risk patients, as aggregates on a fixed grid.

A site splits the patients it evaluated at its own median predicted log-risk (common.metrics
`risk_groups`), and reports per endpoint, as flat metric keys (floats, like every other metric):

    km-<endpoint>-<group>-<days>d     Kaplan-Meier survival of the group at that many days
                                      (group: low / high; days: every 3 months to 5 years, up to
                                      the group's last follow-up time)
    km-<endpoint>-<group>-n           patients in the group
    logrank-p-<endpoint>              log-rank p-value of high vs low

nothing when a group has fewer than MIN_GROUP_SIZE patients.

Survival on a fixed grid rather than the curve's own steps: the steps would sit at individual
patients' event times; grid values are the same picture at report resolution and say nothing
about any one patient beyond what a published KM plot does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from lifelines import KaplanMeierFitter

from stsfl.common.metrics import risk_groups

DAYS_PER_YEAR = 365.25
# Small-cell suppression: a group of fewer patients than this gets no curve (its steps would be
# close to individual outcomes).
MIN_GROUP_SIZE = 5
KM_GRID_DAYS = tuple(int(round(q * DAYS_PER_YEAR / 4)) for q in range(0, 21))  # 0, 91, ..., 1826
GROUPS = ("low", "high")


def risk_group_km(endpoint: str, time, event, risk) -> dict[str, float]:
    """The keys above for one endpoint (patients without the endpoint already removed); empty when
    a group has fewer than MIN_GROUP_SIZE patients."""
    time, event, risk = np.asarray(time, float), np.asarray(event, float) > 0.5, np.asarray(risk, float)
    groups = risk_groups(time, event, risk)
    if min(groups.high.sum(), (~groups.high).sum()) < MIN_GROUP_SIZE:
        return {}
    out: dict[str, float] = {}
    if np.isfinite(groups.logrank_p):
        out[f"logrank-p-{endpoint}"] = groups.logrank_p
    for name, mask in (("low", ~groups.high), ("high", groups.high)):
        grid = np.array([d for d in KM_GRID_DAYS if d <= time[mask].max()], float)
        out[f"km-{endpoint}-{name}-n"] = float(mask.sum())
        survival = KaplanMeierFitter().fit(time[mask], event[mask]).survival_function_at_times(grid).to_numpy()
        for day, value in zip(grid, survival):
            out[f"km-{endpoint}-{name}-{int(day)}d"] = float(value)
    return out


def parse_risk_group_km(metrics: Mapping[str, float], endpoint: str) -> dict | None:
    """Back from a site's metrics: {"low"/"high": ([days], [survival]), "n": {group: n}, "p": p or None};
    None when the site reported no curves for `endpoint`."""
    pattern = re.compile(rf"^km-{re.escape(endpoint)}-(low|high)-(\d+)d$")
    curves: dict[str, list[tuple[int, float]]] = {g: [] for g in GROUPS}
    for key, value in metrics.items():
        found = pattern.match(key)
        if found:
            curves[found.group(1)].append((int(found.group(2)), float(value)))
    if not all(curves.values()):
        return None
    out: dict = {g: tuple(map(list, zip(*sorted(points)))) for g, points in curves.items()}
    out["n"] = {g: metrics.get(f"km-{endpoint}-{g}-n") for g in GROUPS}
    out["p"] = metrics.get(f"logrank-p-{endpoint}")
    return out
