"""The two query phases after the last round that make absolute risks possible, run by the
orchestrator (stsfl.server.orchestrator) after the last round:

1. baseline: the training sites' binned events and risk sums under the selected model
   (stsfl.server.phases.baseline_phase) -> baseline_hazard.json;
2. calibration: every site's calibration and decision curves of the resulting absolute risks on
   its evaluation patients (stsfl.server.phases.calibration_phase) -> calibration.json + PNGs.

A phase nobody answers is logged and skipped: the trained model is still the run's result.
The site-outputs phase (stsfl.server.phases.site_outputs_phase) follows with the baseline returned here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stsfl.common.fed_protocol import ARRAYS, MSG_BASELINE, MSG_CALIBRATION
from stsfl.common.messages import BaselineQuery, BaselineReply, CalibrationReply
from stsfl.common.params import numpy_to_arrays
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext
from stsfl.server.phases.baseline_phase import grid_settings, write_baseline
from stsfl.server.phases.calibration_phase import calibration_query, write_calibration


def run_prediction_phases(ctx: RunContext, state: ServerState) -> dict | None:
    """Baseline hazard, then calibration, of the selected model (the latest when none was selected);
    returns the baseline document (None when no training site answered)."""
    ctx.results.write_status("baseline", completed_rounds=state.round)
    model_round = state.meta.get("best_round") or state.round
    model = ctx.round_config(state, model_round)
    present = ctx.messenger.connected(ctx.fed.training_sites)
    arrays = numpy_to_arrays(state.best_arrays or state.global_arrays)
    query = BaselineQuery(round=model, grid=grid_settings(ctx.fed))
    ok, _ = ctx.messenger.send(MSG_BASELINE, present, {ARRAYS: arrays}, query, model_round)
    if not ok:
        ctx.log("baseline hazard: no training site replied; no baseline_hazard.json")
        return None
    replies = {s: BaselineReply.from_record(r.content).document for s, r in ok.items()}
    document = write_baseline(ctx.results.root, replies, ctx.fed, model_round)
    events = ", ".join(f"{e} {v['events']} events" for e, v in document["endpoints"].items())
    ctx.log(f"baseline hazard of round {model_round}'s model from {len(ok)} site(s): {events}")
    _calibration(ctx, state, arrays, document, model_round)
    return document


def _calibration(ctx: RunContext, state: ServerState, arrays: Any, baseline: dict, model_round: int) -> None:
    query = calibration_query(ctx.round_config(state, model_round), ctx.fed.prediction.horizons_years, baseline)
    present = [s for s in ctx.fed.sites if s in ctx.messenger.sites.node_of]
    ok, _ = ctx.messenger.send(MSG_CALIBRATION, present, {ARRAYS: arrays}, query, model_round)
    if not ok:
        ctx.log("calibration: no site replied; no calibration.json")
        return
    fits = write_calibration(
        ctx.results.root, {s: CalibrationReply.from_record(r.content).document for s, r in ok.items()}, ctx.fed
    )
    for site in ctx.fed.holdout:
        shown = ", ".join(
            f"{e} intercept {a:+.2f} slope {b:.2f}"
            if np.isfinite(b)
            else f"{e} not estimated (too few events or patients; calibration.json says which)"
            for e, (a, b) in sorted(fits.get(site, {}).items())
        )
        ctx.log(f"held-out {site} calibration at the middle horizon: {shown or 'not available'}")
