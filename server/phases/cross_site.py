"""Cross-site validation results (as NVIDIA FLARE's cross-site model evaluation): which model does
how well at which site.

Rows are models (`global`, then `local-<site>`: the final global model fine-tuned at that training
site), columns are the evaluating sites: training sites on their evaluation split (the validation
split of a multimodal site, the test rows of a tabular one), held-out centres on all their
patients (`roles` says which is which). A cell holds the aggregate metrics the site reported for
that model (`stsfl.common.site_metrics` keys); a missing cell (the site did not reply, or the
metric is undefined on its patients) is nan.

    <results>/cross_site.csv    one row per (metric, endpoint, model), one column per site:
                                Harrell's and Uno's C, the matrices side by side
    <results>/cross_site.json   models, sites and their roles, every metric of every cell
    <results>/cross_site.png    heat maps of those matrices, cells annotated
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stsfl.common.figures import pyplot

GLOBAL_MODEL = "global"
MATRIX_METRICS = ("c-harrell", "c-uno")
METRIC_LABELS = {"c-harrell": "Harrell's C", "c-uno": "Uno's C"}
EVENTS_PREFIX = "eval-events-"


def local_model_name(site: str) -> str:
    return f"local-{site}"


@dataclass(frozen=True)
class CrossSiteMatrix:
    """models [M] x sites [S]; `cells[model][site]` = that site's metrics of that model."""

    models: list[str]
    sites: list[str]
    holdout: list[str]
    cells: dict[str, dict[str, dict[str, float]]]

    @staticmethod
    def from_site_replies(
        per_site: dict[str, dict[str, dict[str, float]]], models: list[str], sites: list[str], holdout: list[str]
    ) -> CrossSiteMatrix:
        """Assemble from {evaluating site: {model: metrics}} (sites that did not reply are absent)."""
        cells = {m: {s: dict(per_site.get(s, {}).get(m, {})) for s in sites} for m in models}
        return CrossSiteMatrix(list(models), list(sites), list(holdout), cells)

    @property
    def endpoints(self) -> list[str]:
        """Endpoints some site reported events for (from the `eval-events-<endpoint>` keys)."""
        found = {
            k.removeprefix(EVENTS_PREFIX)
            for row in self.cells.values()
            for cell in row.values()
            for k in cell
            if k.startswith(EVENTS_PREFIX)
        }
        return sorted(found)

    def role(self, site: str) -> str:
        return "held-out" if site in self.holdout else "training"

    def site_labels(self, endpoint: str) -> list[str]:
        """Column labels: site, role and its events for `endpoint` (the same for every model)."""
        labels = []
        for site in self.sites:
            events = {cell[site].get(f"{EVENTS_PREFIX}{endpoint}") for cell in self.cells.values()} - {None}
            shown = f", {max(events):.0f} events" if events else ""
            labels.append(f"{site}\n({self.role(site)}{shown})")
        return labels

    def table(self, metric: str, endpoint: str) -> np.ndarray:
        """[M, S] values of `<metric>-<endpoint>`, nan where missing."""
        key = f"{metric}-{endpoint}"
        return np.array([[self.cells[m][s].get(key, np.nan) for s in self.sites] for m in self.models], dtype=float)

    def csv_rows(self) -> list[list[Any]]:
        rows: list[list[Any]] = [["metric", "endpoint", "model", *self.sites]]
        for metric in MATRIX_METRICS:
            for endpoint in self.endpoints:
                for model, values in zip(self.models, self.table(metric, endpoint)):
                    rows.append([metric, endpoint, model, *("" if np.isnan(v) else f"{v:.6f}" for v in values)])
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "sites": self.sites,
            "roles": {s: self.role(s) for s in self.sites},
            "endpoints": self.endpoints,
            "cells": self.cells,
        }

    def text_lines(self, metric: str = "c-harrell") -> list[str]:
        """The matrix of `metric` as plain text lines (the coordinator's screen and log)."""
        label_width = max(len(m) for m in self.models) + 2
        column_width = max(len(s) for s in self.sites) + 2
        lines = []
        for endpoint in self.endpoints:
            lines.append(f"{METRIC_LABELS[metric]}, {endpoint} (rows: models, columns: evaluating sites)")
            lines.append(" " * label_width + "".join(f"{s:>{column_width}}" for s in self.sites))
            for model, values in zip(self.models, self.table(metric, endpoint)):
                cells = "".join(f"{'-' if np.isnan(v) else f'{v:.3f}':>{column_width}}" for v in values)
                lines.append(f"{model:<{label_width}}{cells}")
        return lines


def write_cross_site(root: Path, matrix: CrossSiteMatrix) -> list[Path]:
    """cross_site.csv, cross_site.json and cross_site.png in `root`."""
    root = Path(root)
    csv_path, json_path = root / "cross_site.csv", root / "cross_site.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(matrix.csv_rows())
    json_path.write_text(json.dumps(matrix.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [csv_path, json_path, plot_cross_site(matrix, root / "cross_site.png")]


def plot_cross_site(matrix: CrossSiteMatrix, path: Path) -> Path:
    """Heat maps (rows of panels: Harrell's C, Uno's C; columns: endpoints), every cell annotated."""
    endpoints = matrix.endpoints or ["-"]
    n_rows, n_cols = len(MATRIX_METRICS), len(endpoints)
    width = max(4.0, 1.1 * len(matrix.sites) + 2.2)
    height = max(2.5, 0.55 * len(matrix.models) + 1.6)
    fig, axes = pyplot().subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False, layout="constrained")
    image = None
    for i, metric in enumerate(MATRIX_METRICS):
        for j, endpoint in enumerate(endpoints):
            ax = axes[i][j]
            values = matrix.table(metric, endpoint)
            # C = 0.5 is chance: a diverging map centred there shows better / worse than chance.
            image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r", vmin=0.2, vmax=0.8, aspect="auto")
            for (r, c), v in np.ndenumerate(values):
                ax.text(
                    c,
                    r,
                    "n/a" if np.isnan(v) else f"{v:.3f}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="black" if np.isnan(v) or abs(v - 0.5) < 0.2 else "white",
                )
            ax.set_xticks(range(len(matrix.sites)), matrix.site_labels(endpoint), fontsize=8)
            ax.set_yticks(range(len(matrix.models)), matrix.models, fontsize=8)
            ax.set_xlabel("evaluated at")
            ax.set_title(f"{METRIC_LABELS[metric]}, {endpoint}", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="C-index")
    fig.suptitle("Cross-site validation: models (rows) x evaluating sites (columns)", fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path
