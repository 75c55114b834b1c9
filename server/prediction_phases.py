"""The two query phases after the last round that make absolute risks possible, run by the
orchestrator (`Federation.run`) with its own messaging (`_send`) and round config:

1. baseline: the training sites' binned events and risk sums under the selected model
   (stsfl.server.baseline_phase) -> baseline_hazard.json;
2. calibration: every site's calibration and decision curves of the resulting absolute risks on
   its evaluation patients (stsfl.server.calibration_phase) -> calibration.json + PNGs.

A phase nobody answers is logged and skipped: the trained model is still the run's result.
The site-outputs phase (stsfl.server.site_outputs_phase) follows with the baseline returned here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ConfigRecord

from stsfl.common.fed_protocol import ARRAYS, BASELINE, CALIBRATION, MSG_BASELINE, MSG_CALIBRATION, from_json, to_json
from stsfl.common.params import numpy_to_arrays

from .baseline_phase import baseline_query_config, write_baseline
from .calibration_phase import calibration_query_config, write_calibration

if TYPE_CHECKING:
    from .checkpoint import ServerState
    from .orchestrator import Federation


def run_prediction_phases(run: Federation, state: ServerState) -> dict | None:
    """Baseline hazard, then calibration, of the selected model (the latest when none was selected);
    returns the baseline document (None when no training site answered)."""
    run.results.write_status("baseline", completed_rounds=state.round)
    model_round = state.meta.get("best_round") or state.round
    cfg = run._round_config(state, model_round)
    cfg.update(baseline_query_config(run.fed))
    run.sites.refresh(run.query_timeout)
    present = [s for s in run.fed.training_sites if s in run.sites.node_of]
    arrays = numpy_to_arrays(state.best_arrays or state.global_arrays)
    ok, _ = run._send(MSG_BASELINE, present, {ARRAYS: arrays}, cfg, model_round)
    if not ok:
        run.log("baseline hazard: no training site replied; no baseline_hazard.json")
        return None
    replies = {s: from_json(str(r.content[BASELINE]["json"])) for s, r in ok.items()}
    document = write_baseline(run.results.root, replies, run.fed, model_round)
    events = ", ".join(f"{e} {v['events']} events" for e, v in document["endpoints"].items())
    run.log(f"baseline hazard of round {model_round}'s model from {len(ok)} site(s): {events}")
    _calibration(run, arrays, cfg, document, model_round)
    return document


def _calibration(run: Federation, arrays: Any, cfg: ConfigRecord, baseline: dict, model_round: int) -> None:
    cfg.update(calibration_query_config(run.fed, baseline))
    cfg["holdout-sites"] = to_json(run.fed.holdout)
    present = [s for s in run.fed.sites if s in run.sites.node_of]
    ok, _ = run._send(MSG_CALIBRATION, present, {ARRAYS: arrays}, cfg, model_round)
    if not ok:
        run.log("calibration: no site replied; no calibration.json")
        return
    fits = write_calibration(
        run.results.root, {s: from_json(str(r.content[CALIBRATION]["json"])) for s, r in ok.items()}, run.fed
    )
    for site in run.fed.holdout:
        shown = ", ".join(
            f"{e} intercept {a:+.2f} slope {b:.2f}"
            if np.isfinite(b)
            else f"{e} not estimated (too few events or patients; calibration.json says which)"
            for e, (a, b) in sorted(fits.get(site, {}).items())
        )
        run.log(f"held-out {site} calibration at the middle horizon: {shown or 'not available'}")
