"""`sts-client recalibrate`: a site that joins after the federation recalibrates the exported model on
its own patients, without training (stsfl.client.prediction.recalibration), and sees calibration before and after.

    sts-client recalibrate --site site.yaml --model model.stsfl.zip [--out DIR] [--folds 5]

writes into DIR (default ./recalibration), all of it staying at the site:

    recalibration.json   per endpoint the site's calibration slope and baseline bins (and the
                         competing event's), the before / after calibration at each horizon;
                         `sts-client predict --recalibration recalibration.json` uses it
    recalibration.html   the before / after table (intercept, slope, O/E per endpoint and horizon)
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from stsfl.client.prediction.baseline_site import SiteRisks
from stsfl.client.prediction.recalibration import RiskModel, before_after, cross_fitted_risk, endpoint_data, fit_endpoint
from stsfl.common.absolute_risk import horizons_in_days
from stsfl.common.baseline_hazard import time_grid
from stsfl.common.clinical_stats import GlobalClinicalStats
from stsfl.common.config import SiteConfig, load_config
from stsfl.common.console import UserError
from stsfl.common.model_file import ExportedModel, load_model_file

RECALIBRATION_FILE = "recalibration.json"


def model_risk(model: ExportedModel, endpoint: str) -> RiskModel:
    """The model file's own absolute risk of `endpoint` (pooled baselines, slope 1): the "before"."""
    hazard, _ = model.baseline_hazard(endpoint)
    competing = model.competing_baselines(endpoint)
    return RiskModel(1.0, hazard, None if competing is None else (competing.cause, 1.0, competing.competing))


def recalibrate_risks(
    risks: SiteRisks, before: dict[str, RiskModel], edges: np.ndarray, horizons: list[float], folds: int = 5, seed: int = 0
) -> dict:
    """{"endpoints": {e: {"slope", "bins"[, "competing"], "patients", "calibration": before_after}}}
    from the site's outcomes and log-risks `risks` and the model file's risk models `before`."""
    out = {}
    for k, endpoint in enumerate(risks.endpoints):
        data = endpoint_data(risks, k)
        if len(data.time) < 2 * folds:
            raise UserError(
                f"endpoint {endpoint}: {len(data.time)} patients with outcomes, too few to recalibrate ({2 * folds} needed)"
            )
        _, entry = fit_endpoint(data, edges)
        after = cross_fitted_risk(data, edges, horizons, folds, seed)
        out[endpoint] = entry | {"patients": len(data.time), "calibration": before_after(data, before[endpoint], after, horizons)}
    return {"endpoints": out}


def _html(document: dict) -> str:
    rows = []
    for endpoint, entry in document["endpoints"].items():
        for key, cal in entry["calibration"].items():
            head = f"<th>{html.escape(endpoint)}</th><td>{float(key) / 365.25:g} y</td>"
            if "skipped" in cal:
                rows.append(f"<tr>{head}<td colspan=6>{html.escape(cal['skipped'])}</td></tr>")
                continue
            cells = "".join(
                f"<td>{cal[w]['intercept']:+.2f}</td><td>{cal[w]['slope']:.2f}</td><td>{cal[w]['observed_expected']:.2f}</td>"
                for w in ("before", "after")
            )
            rows.append(f"<tr>{head}{cells}</tr>")
    slopes = ", ".join(f"{e} {v['slope']:.2f}" for e, v in document["endpoints"].items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Recalibration of {html.escape(document["site"])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:1em auto}} td,th{{border:1px solid #ccc;padding:3px 8px}}
table{{border-collapse:collapse}}</style></head><body>
<h1>Recalibration at {html.escape(document["site"])}, without training</h1>
<p>The network is kept; this site's own baseline hazards and calibration slopes ({html.escape(slopes)}) replace the
federation's pooled baselines. Observed risk: Aalen-Johansen (death competing with dm and lr), Kaplan-Meier for os.
"After" is cross-fitted ({document["folds"]} folds): each patient's risk comes from a recalibration fitted without them.</p>
<table><tr><th>endpoint</th><th>horizon</th><th colspan=3>before: intercept, slope, O/E</th>
<th colspan=3>after: intercept, slope, O/E</th></tr>{"".join(rows)}</table>
<p><small>Ideal: intercept 0, slope 1, O/E 1. Model file: {html.escape(document["model"])}.</small></p></body></html>
"""


def recalibrate_site(model_file: Path, site_yaml: Path, out_dir: Path, folds: int = 5, seed: int = 0) -> dict:
    """Score the site's patients with the model file's network, recalibrate, write the files above."""
    from stsfl.client.data.site_inventory import site_schema
    from stsfl.client.data.site_prepare import prepare_site
    from stsfl.client.prediction.model_export import site_risks
    from stsfl.client.prediction.predict import build_network

    site = load_config(site_yaml, SiteConfig)
    model = load_model_file(model_file, schema=site_schema(site, site_yaml))
    prepared = prepare_site(site, site_yaml, model.preset, schema=model.schema, policy="skip")
    _, risks = site_risks(build_network(model), prepared, GlobalClinicalStats.from_dict(model.statistics))
    grid = model.baseline["grid"]
    edges = time_grid(float(grid["bin_days"]), float(grid["max_days"]))
    horizons = horizons_in_days(model.horizons_years).tolist()
    before = {e: model_risk(model, e) for e in model.endpoints}
    document = {"site": site.name, "model": str(model_file), "folds": folds, "grid": grid, "horizons_days": horizons}
    document |= recalibrate_risks(risks, before, edges, horizons, folds, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RECALIBRATION_FILE).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    (out_dir / "recalibration.html").write_text(_html(document), encoding="utf-8")
    return document
