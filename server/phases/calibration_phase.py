"""The calibration phase after the baseline phase: every site scores the selected model's absolute
risks on its evaluation patients (stsfl.client.prediction.calibration_site) and returns curves and counts.

The server writes `<results>/calibration.json` ({site: reply}, horizons in days, and the pooled
calibration of crude cumulative incidences: stsfl.server.phases.incidence_summary) and, per
endpoint, `calibration_<endpoint>.png` (predicted vs Kaplan-Meier observed risk by decile, one
panel per horizon, one colour per site, held-out centres marked) and `decision_<endpoint>.png`
(net benefit vs threshold per site at each horizon, with treat-all and treat-none), and for an
endpoint with a competing event `calibration_<endpoint>_incidence.png` (predicted crude cumulative
incidence vs Aalen-Johansen) and `decision_<endpoint>_incidence.png` (net benefit on the incidence).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stsfl.common.absolute_risk import horizons_in_days
from stsfl.common.atomic_file import write_text_atomic
from stsfl.common.config import FederationConfig
from stsfl.common.figures import pyplot, save_png
from stsfl.common.messages import CalibrationQuery, RoundConfig
from stsfl.server.phases.incidence_summary import plot_incidence, pooled_incidence

CALIBRATION_FILE = "calibration.json"


def competing_baselines(baseline: dict[str, Any]) -> dict[str, Any]:
    """Per endpoint with a competing event: the competing event's cause, pooled baseline and bins."""
    return {
        name: {k: entry["competing"][k] for k in ("cause", "pooled", "bins")}
        for name, entry in baseline["endpoints"].items()
        if "competing" in entry
    }


def calibration_query(model: RoundConfig, horizons_years: list[float], baseline: dict[str, Any]) -> CalibrationQuery:
    """The calibration query of the model of `model`: the pooled baselines, the horizons and, for
    endpoints with a competing event, the competing event's pooled baseline with its bins."""
    return CalibrationQuery(
        round=model,
        baseline={name: entry["pooled"] for name, entry in baseline["endpoints"].items()},
        horizons_days=horizons_in_days(horizons_years).tolist(),
        competing=competing_baselines(baseline),
    )


def _label(site: str, fed: FederationConfig) -> str:
    return f"{site} (held out)" if site in fed.holdout else site


def plot_site_curves(replies: dict[str, dict], fed: FederationConfig, endpoint: str, root: Path) -> list[Path]:
    """calibration_<endpoint>.png and decision_<endpoint>.png; horizons without data are left empty."""
    horizons = horizons_in_days(fed.prediction.horizons_years)
    years = fed.prediction.horizons_years
    colour = {site: f"C{i % 10}" for i, site in enumerate(sorted(replies))}  # one colour per site in every panel
    paths = []
    for kind in ("calibration", "decision"):
        fig, axes = pyplot().subplots(1, len(horizons), figsize=(3.8 * len(horizons), 3.6), squeeze=False)
        for ax, horizon, y in zip(axes[0], horizons, years):
            for site, reply in sorted(replies.items()):
                entry = reply["endpoints"].get(endpoint, {}).get(f"{horizon:g}", {})
                if "groups" not in entry:
                    continue
                style = {"ls": "--" if site in fed.holdout else "-", "marker": "o", "ms": 3, "color": colour[site]}
                if kind == "calibration":
                    g = entry["groups"]
                    ax.plot(g["predicted"], g["observed"], label=f"{_label(site, fed)}: slope {entry['slope']:.2f}", **style)
                else:
                    d = entry["decision"]
                    ax.plot(d["thresholds"], d["model"], label=_label(site, fed), ls=style["ls"], color=colour[site])
                    ax.plot(d["thresholds"], d["treat_all"], color=colour[site], lw=0.7, ls=":")
            if kind == "calibration":
                ax.plot([0, 1], [0, 1], color="grey", lw=1)
                ax.set_xlabel("predicted risk")
                ax.set_ylabel("observed risk (Kaplan-Meier)")
            else:
                ax.axhline(0.0, color="black", lw=1)
                ax.set_ylim(bottom=-0.05)
                ax.set_xlabel("threshold probability (dotted: treat all)")
                ax.set_ylabel("net benefit")
            ax.set_title(f"{endpoint}, {y:g} years", fontsize=9)
            ax.legend(fontsize=6)
        paths.append(save_png(fig, root / f"{kind}_{endpoint}.png"))
    return paths


def write_calibration(results_dir: Path, replies: dict[str, dict], fed: FederationConfig) -> dict[str, Any]:
    """calibration.json and the per-endpoint PNGs; returns {site: {endpoint: (intercept, slope) at the middle horizon}}."""
    root = Path(results_dir)
    document = {
        "horizons_days": horizons_in_days(fed.prediction.horizons_years).tolist(),
        "holdout": fed.holdout,
        "sites": replies,
        "pooled_incidence": pooled_incidence(replies, fed.holdout),
    }
    write_text_atomic(root / CALIBRATION_FILE, json.dumps(document) + "\n")
    endpoints = sorted({e for r in replies.values() for e in r["endpoints"]})
    horizons = horizons_in_days(fed.prediction.horizons_years).tolist()
    for endpoint in endpoints:
        plot_site_curves(replies, fed, endpoint, root)
        for kind in ("calibration", "decision"):
            plot_incidence(replies, fed.holdout, endpoint, horizons, root / f"{kind}_{endpoint}_incidence.png", kind)
    middle = f"{horizons_in_days(fed.prediction.horizons_years)[len(fed.prediction.horizons_years) // 2]:g}"
    return {
        site: {
            e: (r["endpoints"][e][middle].get("intercept", np.nan), r["endpoints"][e][middle].get("slope", np.nan))
            for e in r["endpoints"]
            if middle in r["endpoints"][e]
        }
        for site, r in replies.items()
    }
