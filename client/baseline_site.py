"""A site's answer to the baseline-hazard query (after the federation's last round).

Per endpoint, from the global model's log-risks of the site's patients with that endpoint: the
events and risk sums on the federation's coarse time grid (`stsfl.common.baseline_hazard`) and a
histogram of the log-risks on fixed edges (counts only), from which the server derives the
cohort's low- and high-risk reference curves. Neither holds an event time or a patient's risk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stsfl.common.baseline_hazard import site_baseline_bins, time_grid
from stsfl.common.risk_group_km import MIN_GROUP_SIZE
from stsfl.common.risk_histogram import risk_histogram


@dataclass
class SiteRisks:
    """The site's patients with outcomes: time, event, observed, log_risk [N, K] in `endpoints` order."""

    endpoints: list[str]
    time: np.ndarray
    event: np.ndarray
    observed: np.ndarray
    log_risk: np.ndarray
    encoder_fingerprint: str | None = None


def baseline_reply(risks: SiteRisks, grid: dict) -> dict:
    """{"endpoints": {name: {"bins": BaselineBins dict, "risk_histogram": counts}}, "patients": N,
    "encoder_fingerprint": the slide encoder's weight fingerprint (the exported model records it)}."""
    edges = time_grid(float(grid["bin_days"]), float(grid["max_days"]))
    out = {}
    for k, endpoint in enumerate(risks.endpoints):
        seen = np.asarray(risks.observed[:, k], bool)
        time, event, eta = risks.time[seen, k], risks.event[seen, k], risks.log_risk[seen, k]
        out[endpoint] = {
            "bins": site_baseline_bins(time, event, eta, edges, min_at_risk=MIN_GROUP_SIZE).to_dict(),
            "risk_histogram": risk_histogram(eta).tolist(),
        }
    return {"endpoints": out, "patients": int(len(risks.time)), "encoder_fingerprint": risks.encoder_fingerprint}
