"""The baseline-hazard phase after the last round: combine the training sites' binned aggregates.

Each training site answered `query.baseline` with, per endpoint, its events and risk sums on the
shared grid and a histogram of its log-risks (stsfl.client.prediction.baseline_site; held-out centres are
not asked: they stay external). The server writes `<results>/baseline_hazard.json` (layout in
stsfl.common.baseline_document: pooled and per-site baselines per endpoint) and a picture of both
per endpoint, `baseline_hazard.png`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stsfl.common.atomic_file import write_text_atomic
from stsfl.common.baseline_document import baseline_document
from stsfl.common.baseline_hazard import DAYS_PER_YEAR, BaselineHazard
from stsfl.common.config import FederationConfig
from stsfl.common.figures import pyplot, save_png

BASELINE_FILE = "baseline_hazard.json"


def grid_settings(fed: FederationConfig) -> dict[str, float]:
    grid = fed.prediction.grid
    return {"bin_days": grid.bin_days, "max_days": grid.max_years * DAYS_PER_YEAR}


def combine_baseline_replies(replies: dict[str, dict], fed: FederationConfig, model_round: int) -> dict[str, Any]:
    """The document of baseline_hazard.json from {site: reply} (see stsfl.common.baseline_document)."""
    return baseline_document(replies, grid_settings(fed), model_round)


def plot_baselines(document: dict[str, Any], path: Path) -> Path:
    """Baseline survival exp(-H0(t)) per endpoint: pooled (black) and per site (thin), as a PNG."""
    names = list(document["endpoints"])
    fig, axes = pyplot().subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        entry = document["endpoints"][name]
        for site, hazard in entry["per_site"].items():
            h = BaselineHazard.from_dict(hazard)
            ax.plot(h.edges / DAYS_PER_YEAR, np.exp(-h.cumulative), lw=1, label=site)
        h = BaselineHazard.from_dict(entry["pooled"])
        ax.plot(h.edges / DAYS_PER_YEAR, np.exp(-h.cumulative), color="black", lw=2, label="pooled")
        ax.set_xlabel("years")
        ax.set_ylabel("baseline survival")
        ax.set_title(f"{name} ({entry['events']} events)")
        ax.legend(fontsize=7)
    return save_png(fig, path)


def write_baseline(results_dir: Path, replies: dict[str, dict], fed: FederationConfig, model_round: int) -> dict[str, Any]:
    """Combine and write baseline_hazard.json and baseline_hazard.png; returns the document."""
    import json

    document = combine_baseline_replies(replies, fed, model_round)
    path = Path(results_dir) / BASELINE_FILE
    write_text_atomic(path, json.dumps(document) + "\n")
    plot_baselines(document, Path(results_dir) / "baseline_hazard.png")
    return document
