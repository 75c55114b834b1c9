"""The site-outputs phase, last after the prediction phases: every connected site (training and
held out) gets the selected model, the pooled baseline hazard with its bins and the horizons, and
writes its own patients' risk scores, Grad-CAM overlays and validation report at the site
(stsfl.client.site_outputs). Only counts come back: the server logs one line per site and the
counts go into summary.json. A site that fails is logged and the run goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stsfl.common.absolute_risk import horizons_in_days
from stsfl.common.config import FederationConfig
from stsfl.common.fed_protocol import ARRAYS, BASELINE_BINS, HORIZONS, METRICS, MSG_SITE_OUTPUTS, to_json
from stsfl.common.params import numpy_to_arrays

from .calibration_phase import calibration_query_config

if TYPE_CHECKING:
    from .checkpoint import ServerState
    from .orchestrator import Federation

# What a site's reply may hold: counts, nothing per patient.
SITE_OUTPUT_COUNTS = ("patients", "gradcams", "attention_maps", "problems")


def site_outputs_query_config(fed: FederationConfig, baseline: dict[str, Any] | None) -> dict[str, str]:
    """The horizons and, when the baseline phase produced one, the pooled baselines and their bins
    (the sites' absolute risks and intervals); without it the sites write log-risks only."""
    if baseline is None:
        return {HORIZONS: to_json(horizons_in_days(fed.prediction.horizons_years).tolist())}
    bins = {name: entry["bins"] for name, entry in baseline["endpoints"].items()}
    return {**calibration_query_config(fed, baseline), BASELINE_BINS: to_json(bins)}


def describe_site_outputs(site: str, counts: dict[str, int]) -> str:
    """One log line: 'center_0 wrote 105 risk scores, 98 Grad-CAM overlays at the site'."""
    parts = [f"{counts.get('patients', 0)} risk scores"]
    if "gradcams" in counts:
        parts.append(f"{counts['gradcams']} Grad-CAM overlays")
    if counts.get("attention_maps"):
        parts.append(f"{counts['attention_maps']} slide attention maps")
    if "problems" in counts:
        parts.append(f"a validation report ({counts['problems']} problems)")
    return f"{site} wrote {', '.join(parts)} at the site"


def run_site_outputs(run: Federation, state: ServerState, baseline: dict[str, Any] | None) -> dict[str, Any]:
    """Send the query; returns {"model_round", "sites": {site: counts}, "failed": {site: reason}}."""
    run.results.write_status("site-outputs", completed_rounds=state.round)
    model_round = state.meta.get("best_round") or state.round
    cfg = run._round_config(state, model_round)
    cfg.update(site_outputs_query_config(run.fed, baseline))
    cfg["holdout-sites"] = to_json(run.fed.holdout)
    run.sites.refresh(run.query_timeout)
    present = [s for s in run.fed.sites if s in run.sites.node_of]
    arrays = numpy_to_arrays(state.best_arrays or state.global_arrays)
    ok, failed = run._send(MSG_SITE_OUTPUTS, present, {ARRAYS: arrays}, cfg, model_round)
    counts = {
        site: {k: int(v) for k, v in reply.content[METRICS].items() if k in SITE_OUTPUT_COUNTS}
        for site, reply in sorted(ok.items())
    }
    for site, site_counts in counts.items():
        run.log(describe_site_outputs(site, site_counts))
    for site in run.fed.sites:  # (`_send` logged the sites that failed)
        if site not in present:
            failed[site] = "not connected"
            run.log(f"{site} wrote no site outputs: not connected")
    return {"model_round": model_round, "sites": counts, "failed": failed}
