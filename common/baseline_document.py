"""The baseline-hazard document: the sites' binned replies combined, as stored in the results
folder (`baseline_hazard.json`) and in the exported model file.

    {"grid": {"bin_days", "max_days"}, "model_round": R, "sites": [...],
     "endpoints": {name: {"pooled": {"edges", "cumulative"}, "bins": pooled bins,
                          "per_site": {site: {"edges", "cumulative"}}, "per_site_bins": {site: bins},
                          "risk_histogram": pooled log-risk counts, "events": n
                          [, "competing": {"cause", "pooled", "bins", "per_site", "per_site_bins",
                                           "events"}]}},
     "encoder_fingerprints": {site: the slide encoder's weight fingerprint or null}}

`pooled` is the baseline of one Cox model over all the sites; `per_site` the stratified
(per-centre) baselines, for sites whose baseline hazards differ. `competing` (an endpoint with a
competing event) holds the same for the cause-specific hazard of the competing event before the
endpoint, whose covariate is the log-risk of the endpoint `cause` (stsfl.common.competing_risks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stsfl.common.baseline_hazard import BaselineBins, BaselineHazard, combine_bins


def _combined(per_site: dict[str, BaselineBins]) -> dict[str, Any]:
    pooled = combine_bins(per_site.values())
    return {
        "pooled": BaselineHazard.from_bins(pooled).to_dict(),
        "bins": pooled.to_dict(),
        "per_site": {s: BaselineHazard.from_bins(b).to_dict() for s, b in per_site.items()},
        "per_site_bins": {s: b.to_dict() for s, b in per_site.items()},
        "events": int(pooled.events.sum()),
    }


def _competing_entry(replies: dict[str, dict], name: str) -> dict[str, Any] | None:
    """The combined competing-event bins of endpoint `name`, or None when no site sent any."""
    entries = {
        s: r["endpoints"][name]["competing"] for s, r in sorted(replies.items()) if "competing" in r["endpoints"].get(name, {})
    }
    if not entries:
        return None
    causes = {e["cause"] for e in entries.values()}
    if len(causes) > 1:
        raise ValueError(f"endpoint {name}: sites disagree on the competing endpoint ({sorted(causes)})")
    return {"cause": causes.pop(), **_combined({s: BaselineBins.from_dict(e["bins"]) for s, e in entries.items()})}


def baseline_document(replies: dict[str, dict], grid: dict[str, float], model_round: int) -> dict[str, Any]:
    """Combine {site: reply of stsfl.client.prediction.baseline_site.baseline_reply} into the document above."""
    if not replies:
        raise ValueError("no site answered the baseline query")
    endpoints: dict[str, Any] = {}
    for name in sorted({e for r in replies.values() for e in r["endpoints"]}):
        per_site = {
            s: BaselineBins.from_dict(r["endpoints"][name]["bins"]) for s, r in sorted(replies.items()) if name in r["endpoints"]
        }
        histogram = np.sum([np.asarray(replies[s]["endpoints"][name]["risk_histogram"]) for s in per_site], axis=0)
        endpoints[name] = {**_combined(per_site), "risk_histogram": histogram.astype(int).tolist()}
        competing = _competing_entry(replies, name)
        if competing is not None:
            endpoints[name]["competing"] = competing
    fingerprints = {s: r.get("encoder_fingerprint") for s, r in sorted(replies.items())}
    return {
        "grid": dict(grid),
        "model_round": model_round,
        "sites": sorted(replies),
        "endpoints": endpoints,
        "encoder_fingerprints": fingerprints,
    }
