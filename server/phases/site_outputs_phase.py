"""The site-outputs phase, last after the prediction phases: every connected site (training and
held out) gets the selected model, the pooled baseline hazard with its bins and the horizons, and
writes its own patients' risk scores, Grad-CAM overlays and validation report at the site
(stsfl.client.outputs.site_outputs). Only counts come back: the server logs one line per site and the
counts go into summary.json. A site that fails is logged and the run goes on.
"""

from __future__ import annotations

from typing import Any

from stsfl.common.absolute_risk import horizons_in_days
from stsfl.common.fed_protocol import ARRAYS, MSG_SITE_OUTPUTS
from stsfl.common.messages import RoundConfig, SiteOutputsQuery, SiteOutputsReply
from stsfl.common.params import numpy_to_arrays
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext
from stsfl.server.phases.calibration_phase import calibration_query

# What a site's reply may hold: counts, nothing per patient.
SITE_OUTPUT_COUNTS = ("patients", "gradcams", "attention_maps", "problems")


def site_outputs_query(model: RoundConfig, horizons_years: list[float], baseline: dict[str, Any] | None) -> SiteOutputsQuery:
    """The horizons and, when the baseline phase produced one, the pooled baselines and their bins
    (the sites' absolute risks and intervals); without it the sites write log-risks only."""
    if baseline is None:
        return SiteOutputsQuery(round=model, horizons_days=horizons_in_days(horizons_years).tolist())
    calibration = calibration_query(model, horizons_years, baseline)
    return SiteOutputsQuery(
        round=model,
        horizons_days=calibration.horizons_days,
        baseline=calibration.baseline,
        bins={name: entry["bins"] for name, entry in baseline["endpoints"].items()},
        competing=calibration.competing,
    )


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


def run_site_outputs(ctx: RunContext, state: ServerState, baseline: dict[str, Any] | None) -> dict[str, Any]:
    """Send the query; returns {"model_round", "sites": {site: counts}, "failed": {site: reason}}."""
    ctx.results.write_status("site-outputs", completed_rounds=state.round)
    model_round = state.meta.get("best_round") or state.round
    cfg = site_outputs_query(ctx.round_config(state, model_round), ctx.fed.prediction.horizons_years, baseline)
    present = ctx.messenger.connected(ctx.fed.sites)
    arrays = numpy_to_arrays(state.best_arrays or state.global_arrays)
    ok, failed = ctx.messenger.send(MSG_SITE_OUTPUTS, present, {ARRAYS: arrays}, cfg, model_round)
    counts = {
        site: {k: v for k, v in SiteOutputsReply.from_record(reply.content).counts.items() if k in SITE_OUTPUT_COUNTS}
        for site, reply in sorted(ok.items())
    }
    for site, site_counts in counts.items():
        ctx.log(describe_site_outputs(site, site_counts))
    for site in ctx.fed.sites:  # (the messenger logged the sites that failed)
        if site not in present:
            failed[site] = "not connected"
            ctx.log(f"{site} wrote no site outputs: not connected")
    return {"model_round": model_round, "sites": counts, "failed": failed}
