"""The per-patient prediction page (one self-contained HTML file, images inlined) and the CSV.

Page: the patient id, the modalities used and the missing ones with the reason, the warnings,
per endpoint the risk at each horizon with its interval and the risk percentile, the survival
curve with its band against the federation's low- and high-risk mean curves, the Grad-CAM
overlay of the MRI branch and the slide's most-attended tiles. For an endpoint with a competing
event the risk shown first is the crude cumulative incidence (the page says so), and 1 - S
follows on its own row as the risk in a world without the competing event.
"""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stsfl.common.absolute_risk import AbsoluteRisk
from stsfl.common.baseline_hazard import DAYS_PER_YEAR
from stsfl.common.config import ModelPreset
from stsfl.common.figures import pyplot, save_png
from stsfl.common.model_file import ExportedModel

if TYPE_CHECKING:
    from stsfl.client.prediction.patient_prediction import PatientPrediction


def save_survival_figure(prediction: PatientPrediction, path: Path) -> Path:
    """One panel per endpoint: the patient's survival curve (band: baseline-hazard bootstrap) and the
    mean model survival of the training patients below / above the median risk."""
    n = len(prediction.endpoints)
    fig, axes = pyplot().subplots(1, n, figsize=(4.4 * n, 3.5), squeeze=False)
    for ax, ep in zip(axes[0], prediction.endpoints):
        years = ep.absolute.times / DAYS_PER_YEAR
        ax.plot(years, ep.cohort_low, color="tab:blue", ls="--", lw=1, label="cohort, lower-risk half")
        ax.plot(years, ep.cohort_high, color="tab:red", ls="--", lw=1, label="cohort, higher-risk half")
        ax.fill_between(years, ep.absolute.survival_low[0], ep.absolute.survival_high[0], color="black", alpha=0.15)
        ax.plot(years, ep.absolute.survival[0], color="black", lw=2, label=prediction.pid)
        if ep.incidence is not None:
            label = f"{prediction.pid}, 1 - crude incidence (competing: {ep.competing_label})"
            ax.plot(years, ep.incidence.survival[0], color="tab:green", lw=2, ls=":", label=label)
        for h in ep.absolute.horizons_days / DAYS_PER_YEAR:
            ax.axvline(h, color="grey", lw=0.5)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("years")
        ax.set_ylabel(f"probability free of {ep.label}")
        ax.set_title(ep.label)
        ax.legend(fontsize=7, loc="lower left")
    return save_png(fig, path)


def save_attended_tiles(slide: Path, coords: np.ndarray, weights: np.ndarray, preset: ModelPreset, path: Path, top: int) -> Path:
    """The `top` tiles with the largest attention weights [N] (coords [N, 2] level-0), read again from the slide."""
    from stsfl.client.slides.wsi_tiles import TileReader, open_slide

    order = np.argsort(-weights[: len(coords)])[:top]
    handle = open_slide(slide)
    try:
        reader = TileReader.for_slide(handle, slide, preset.preprocessing.wsi)
        tiles = [reader.read(coords[i]) for i in order]
    finally:
        handle.close()
    fig, axes = pyplot().subplots(1, len(tiles), figsize=(max(1.6 * len(tiles), 5.0), 2.0), squeeze=False)
    for ax, tile, i in zip(axes[0], tiles, order):
        ax.imshow(tile)
        ax.set_title(f"{weights[i]:.2f}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"most-attended tiles of {slide.name} (attention weight; {len(coords)} tiles in the bag)", fontsize=8)
    return save_png(fig, path)


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def _risk_row(label: str, risk: AbsoluteRisk, percentile: str) -> str:
    cells = "".join(
        f"<td><b>{_percent(risk.risk[0, i])}</b><br><small>95% CI {_percent(risk.risk_low[0, i])} - "
        f"{_percent(risk.risk_high[0, i])}</small></td>"
        for i in range(len(risk.horizons_days))
    )
    return f"<tr><th>{html.escape(label)}</th>{cells}<td>{percentile}</td></tr>"


def write_patient_page(prediction: PatientPrediction, model: ExportedModel, path: Path) -> Path:
    esc = html.escape
    rows = []
    for ep in prediction.endpoints:
        if ep.incidence is not None:
            label = f"{ep.label}: crude cumulative incidence (competing event: {ep.competing_label})"
            rows.append(_risk_row(label, ep.incidence, f"{ep.percentile:.0f}"))
            rows.append(_risk_row(f"{ep.label}: risk in a world without the competing event (1 - S)", ep.absolute, ""))
        else:
            rows.append(_risk_row(ep.label, ep.absolute, f"{ep.percentile:.0f}"))
    competing = [ep for ep in prediction.endpoints if ep.incidence is not None]
    note = (
        "<p><small>Crude cumulative incidence: the probability of the event before the horizon <i>and</i> before the "
        "competing event (cause-specific hazards of both, Aalen-Johansen form); it is the risk the patient faces. "
        "1 - S treats the competing event as censoring: the risk in a world without it, always higher.</small></p>"
        if competing
        else ""
    )
    head = "".join(f"<th>{h:g} year{'s' if h != 1 else ''}</th>" for h in model.horizons_years)
    missing = "".join(f"<li>{esc(m)}</li>" for m in prediction.missing)
    warnings = "".join(f"<li>{esc(w)}</li>" for w in prediction.warnings)
    source = model.source
    body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(prediction.pid)}: predicted risks</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:1em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:center}} .warn{{background:#fff3cd;padding:4px 10px}}</style>
</head><body>
<h1>Patient {esc(prediction.pid)}</h1>
<p>Modalities used: <b>{esc(", ".join(prediction.used))}</b></p>
{f'<div class="warn"><b>Prediction without:</b><ul>{missing}</ul></div>' if missing else ""}
{f'<div class="warn"><b>Warnings:</b><ul>{warnings}</ul></div>' if warnings else ""}
<h2>Risk of the event by each horizon</h2>
<table><tr><th>endpoint</th>{head}<th>risk percentile among training patients</th></tr>{"".join(rows)}</table>
{note}<p><small>Intervals: Poisson bootstrap of the federated baseline hazard (the network weights' own uncertainty is
not included, so they are too narrow). Absolute risk = 1 - S0(t)^exp(log-risk).</small></p>
<h2>Survival curves</h2>{_img(prediction.figures.get("survival"), "survival curves")}
<h2>MRI: Grad-CAM</h2>{_img(prediction.figures.get("gradcam"), "Grad-CAM overlay") or "<p>no MRI used</p>"}
<h2>Slide: most-attended tiles</h2>{_img(prediction.figures.get("tiles"), "attended tiles") or "<p>no slide used</p>"}
<hr><p><small>Model: {esc(", ".join(f"{k} {v}" for k, v in source.items()))}; preset {esc(model.preset.name)},
stsfl {esc(model.version)}. Not a medical device; for research use.</small></p>
</body></html>
"""
    path = Path(path)
    path.write_text(body, encoding="utf-8")
    return path


def write_csv(predictions: list[PatientPrediction], model: ExportedModel, path: Path) -> Path:
    """One row per patient: log-risk, risk (1 - S) and interval at each horizon per endpoint and, for
    an endpoint with a competing event, the crude cumulative incidence `<e>_cif_<h>y` with its
    interval; modalities, warnings."""
    header = ["patient_id", "modalities_used", "missing"]
    with_incidence = {ep.name for p in predictions for ep in p.endpoints if ep.incidence is not None}
    for name in model.endpoints:
        header += [f"{name}_log_risk", f"{name}_percentile"]
        for h in model.horizons_years:
            header += [f"{name}_risk_{h:g}y", f"{name}_risk_{h:g}y_low", f"{name}_risk_{h:g}y_high"]
        if name in with_incidence:
            header += [f"{name}_cif_{h:g}y{part}" for h in model.horizons_years for part in ("", "_low", "_high")]
    header.append("warnings")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for p in predictions:
            row = [p.pid, ";".join(p.used), " | ".join(p.missing)]
            for ep in p.endpoints:
                row += [f"{ep.log_risk:.4f}", f"{ep.percentile:.1f}"]
                for i in range(len(ep.absolute.horizons_days)):
                    row += [
                        f"{ep.absolute.risk[0, i]:.4f}",
                        f"{ep.absolute.risk_low[0, i]:.4f}",
                        f"{ep.absolute.risk_high[0, i]:.4f}",
                    ]
                if ep.incidence is not None:
                    row += [
                        f"{getattr(ep.incidence, part)[0, i]:.4f}"
                        for i in range(len(ep.incidence.horizons_days))
                        for part in ("risk", "risk_low", "risk_high")
                    ]
            row.append(" | ".join(p.warnings))
            writer.writerow(row)
    return Path(path)
