"""A site's answer to the baseline-hazard query (after the federation's last round).

Per endpoint, from the global model's log-risks of the site's patients with that endpoint: the
events and risk sums on the federation's coarse time grid (`stsfl.common.baseline_hazard`) and a
histogram of the log-risks on fixed edges (counts only), from which the server derives the
cohort's low- and high-risk reference curves. Neither holds an event time or a patient's risk.
An endpoint with a competing event (the schema's `competing`, e.g. dm competes with os) also
sends the bins of the competing event before it (the cause-specific hazard of death without dm),
on the endpoint's own follow-up with the competing endpoint's log-risk as covariate
(stsfl.common.competing_risks): counts and risk sums again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stsfl.common.baseline_hazard import site_baseline_bins, time_grid
from stsfl.common.competing_risks import COMPETING, competing_status
from stsfl.common.config import ClinicalSchema
from stsfl.common.risk_group_km import MIN_GROUP_SIZE
from stsfl.common.risk_histogram import risk_histogram


@dataclass
class SiteRisks:
    """The site's patients with outcomes: time, event, observed, log_risk [N, K] in `endpoints` order;
    `competing`: {endpoint: the endpoint whose event competes with it} (the schema's declaration)."""

    endpoints: list[str]
    time: np.ndarray
    event: np.ndarray
    observed: np.ndarray
    log_risk: np.ndarray
    encoder_fingerprint: str | None = None
    competing: dict[str, str] = field(default_factory=dict)

    def competing_arrays(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(time, status 0/1/2, log-risk, competing endpoint's log-risk) [n] of endpoint k's followed
        patients (stsfl.common.competing_risks.competing_status), or None without a competing event.
        A patient whose competing endpoint is not followed has no competing event."""
        cause = self.competing.get(self.endpoints[k])
        if cause is None:
            return None
        c = self.endpoints.index(cause)
        seen = np.asarray(self.observed[:, k], bool)
        other_seen = np.asarray(self.observed[seen, c], bool)
        status = competing_status(
            self.time[seen, k], self.event[seen, k], self.time[seen, c], np.where(other_seen, self.event[seen, c], 0)
        )
        return self.time[seen, k], status, self.log_risk[seen, k], self.log_risk[seen, c]


def baseline_reply(risks: SiteRisks, grid: dict) -> dict:
    """{"endpoints": {name: {"bins": BaselineBins dict, "risk_histogram": counts[, "competing":
    {"cause": endpoint, "bins": BaselineBins dict}]}}, "patients": N, "encoder_fingerprint": the
    slide encoder's weight fingerprint (the exported model records it)}."""
    edges = time_grid(float(grid["bin_days"]), float(grid["max_days"]))
    out = {}
    for k, endpoint in enumerate(risks.endpoints):
        seen = np.asarray(risks.observed[:, k], bool)
        time, event, eta = risks.time[seen, k], risks.event[seen, k], risks.log_risk[seen, k]
        out[endpoint] = {
            "bins": site_baseline_bins(time, event, eta, edges, min_at_risk=MIN_GROUP_SIZE).to_dict(),
            "risk_histogram": risk_histogram(eta).tolist(),
        }
        arrays = risks.competing_arrays(k)
        if arrays is not None:
            c_time, status, _, eta_cause = arrays
            bins = site_baseline_bins(c_time, status == COMPETING, eta_cause, edges, min_at_risk=MIN_GROUP_SIZE)
            out[endpoint]["competing"] = {"cause": risks.competing[endpoint], "bins": bins.to_dict()}
    return {"endpoints": out, "patients": int(len(risks.time)), "encoder_fingerprint": risks.encoder_fingerprint}


def competing_map(schema: ClinicalSchema) -> dict[str, str]:
    """{endpoint: its competing endpoint} of the schema's endpoints that declare one."""
    return {e.name: e.competing[0] for e in schema.endpoints if e.competing}
