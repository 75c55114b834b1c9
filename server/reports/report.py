"""The run report: one self-contained HTML page (figures inlined as base64 PNG, no external asset)
plus the same figures as PNG files, built from a results folder.

    sts-server report RESULTS_DIR [--baselines baselines.json]    on demand
    (sts-server writes it at the end of every run)

    <results>/report.html          the page
    <results>/report/*.png         its own figures (figures other phases wrote, e.g.
                                   cross_site.png, are inlined from where they are)

Sections: run, cohort per site, training curves (loss per head, blend weights), evaluation
(per-site and held-out C-index with approximate CIs, Uno's C, td-AUC, IBS; C-index over rounds),
Kaplan-Meier of the predicted low / high risk halves per site (stsfl.common.risk_group_km), calibration, cross-site matrix, leave-one-centre-out, and
the baseline comparison. A section whose input file is not in the folder is replaced by a
one-line note saying which file it needs.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stsfl.common.atomic_file import write_text_atomic
from stsfl.common.risk_group_km import parse_risk_group_km
from stsfl.server.reports import report_figures as figures
from stsfl.server.reports.report_data import (
    RunResults,
    blend_series,
    c_index_series,
    calibration_rows,
    cohort_rows,
    evaluation_rows,
    head_losses,
    read_csv_rows,
)

REPORT_FILE = "report.html"
FIGURE_DIR = "report"


@dataclass
class Section:
    """One section of the page: a title, HTML paragraphs / tables, and PNG figures with captions."""

    title: str
    body: list[str] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)
    note: str | None = None  # set when the section's input is missing: shown instead of a body


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    """An HTML table; header cells are escaped, row cells are trusted (already formatted)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


# ----------------------------------------------------------------------------- sections
def run_section(run: RunResults) -> Section:
    s = run.summary
    rows = [
        ["federation", _fmt(s.get("federation") or run.federation.get("name"))],
        [
            "task",
            _fmt(
                run.federation.get("task", "multimodal")
                + (f", preset {run.federation['preset']}" if run.federation.get("preset") else "")
            ),
        ],
        ["strategy", _fmt(s.get("strategy") or run.federation.get("strategy"))],
        [
            "status",
            _fmt(
                f"{run.status.get('phase', 'unknown')}, {len(run.rounds)} of "
                f"{s.get('rounds') or run.federation.get('rounds', '?')} rounds"
            ),
        ],
        ["training sites", _fmt(", ".join(s.get("training_sites") or [x for x in run.sites if x not in run.holdout]))],
        ["held-out centres", _fmt(", ".join(run.holdout) or "none")],
        ["selected round", _fmt(f"{run.selected_round} ({s.get('selection', 'last round')})")],
    ]
    shares = s.get("network_share") or {}
    if any(c["share"] != 1.0 for c in shares.values()):
        text = ", ".join(f"{e} {c['share']:g}" for e, c in shares.items())
        rows.append(["network's share of the log-risk", _fmt(f"{text} (0: the linear Cox model it started from)")])
    body = [_table(["", ""], rows, "kv")]
    clinical, start = s.get("holdout_clinical_cox") or {}, s.get("holdout_start") or {}
    for site, metrics in (s.get("holdout_selected") or {}).items():
        compared = [("selected model", metrics), ("the clinical Cox model", clinical.get(site))]
        if start.get(site) is not None:
            compared.append(("the linear Cox model it started from (clinical variables and MRI radiomics)", start.get(site)))
        for model, scores in compared:
            shown = [
                f"{k.removeprefix('c-harrell-')} {v:.3f}" for k, v in sorted((scores or {}).items()) if k.startswith("c-harrell-")
            ]
            if shown:
                body.append(
                    f'<p class="headline">Held-out centre {html.escape(site)}, {model}: Harrell\'s C '
                    + ", ".join(f'<span class="c-index">{html.escape(x)}</span>' for x in shown)
                    + "</p>"
                )
    return Section("Run", body)


def cohort_section(run: RunResults, out: Path) -> Section:
    rows = cohort_rows(run)
    if not rows or all(r["patients"] is None for r in rows):
        return Section("Cohort per site", note="statistics.json has no per-site counts")
    endpoints = run.endpoints
    has_modalities = any(r["modalities"] for r in rows)
    header = ["site", "role", "patients", "counted over"] + [f"{e} events" for e in endpoints]
    if has_modalities:
        header += ["usable patients", "MRI", "WSI", "clinical"]
    table = []
    for r in rows:
        line = [_fmt(r["site"]), _fmt(r["role"]), _fmt(r["patients"]), _fmt(r["counted"])] + [
            _fmt(r["events"].get(e)) for e in endpoints
        ]
        if has_modalities:
            usable = r.get("usable") or 0
            line.append(_fmt(usable))
            for m in ("mri", "wsi", "clinical"):
                n = r["modalities"].get(m)
                line.append("&ndash;" if n is None else f"{n} ({100.0 * n / usable:.0f} %)" if usable else str(n))
        table.append(line)
    body = [
        _p(
            "Training sites: the patients and events of their training split (the rest is their validation "
            f"split). Held-out centres have no training split: the patients they evaluated at round "
            f"{run.selected_round} and their events."
        ),
        _table(header, table),
    ]
    if not has_modalities:
        body.append(_p("The sites did not report modality coverage (results of an older version or a tabular task)."))
    return Section(
        "Cohort per site",
        body,
        [
            (
                figures.plot_cohort(rows, endpoints, out / "cohort.png"),
                "Patients, events and modality coverage per site (counts reported by the sites).",
            )
        ],
    )


def training_section(run: RunResults, out: Path) -> Section:
    section = Section("Training")
    losses = head_losses(run)
    if losses:
        section.figures.append(
            (
                figures.plot_head_losses(losses, out / "losses.png"),
                "Cox loss per head, events-weighted mean over the training sites.",
            )
        )
    blend = blend_series(run)
    if blend and len(blend) > 1:
        section.figures.append(
            (
                figures.plot_blend_weights(blend, out / "blend_weights.png"),
                "Gradient-blending weights per round (server-side, from site-aggregated losses).",
            )
        )
    if not section.figures:
        section.note = "rounds.jsonl has no training losses"
    return section


def evaluation_section(run: RunResults, out: Path) -> Section:
    rows = evaluation_rows(run)
    if not rows:
        return Section("Evaluation", note="no evaluation round in rounds.jsonl")
    horizons = sorted({h for r in rows for h in r.auc})
    header = ["site", "role", "endpoint", "patients", "events", "Harrell's C (approx. 95 % CI)", "Uno's C"]
    has_ibs = any(r.ibs is not None for r in rows)
    header += [f"td-AUC {h:g} d" for h in horizons] + (["IBS"] if has_ibs else [])
    table = []
    for r in rows:
        ci = f" ({r.harrell_ci[0]:.3f}&ndash;{r.harrell_ci[1]:.3f})" if r.harrell_ci else ""
        c = f'<span class="c-index">{_fmt(r.harrell)}</span>{ci}' if r.harrell is not None else _fmt(None)
        table.append(
            [_fmt(r.site), _fmt(r.role), _fmt(r.endpoint), _fmt(r.patients, 0), _fmt(r.events, 0), c, _fmt(r.uno)]
            + [_fmt(r.auc.get(h)) for h in horizons]
            + ([_fmt(r.ibs)] if has_ibs else [])
        )
    body = [
        _p(
            f"Metrics of the selected model (round {run.selected_round}) as each site reported them: training sites "
            "on their validation split, held-out centres on all their patients. The C-index interval is the "
            "Hanley-McNeil approximation from C, events and patients (no per-patient data leaves a site), so "
            "it is indicative only."
        ),
        _table(header, table),
    ]
    section = Section("Evaluation", body)
    if any(r.harrell is not None for r in rows):
        section.figures.append(
            (
                figures.plot_evaluation_forest(rows, out / "c_index_sites.png"),
                "Harrell's C per site at the selected round (red: held-out centres).",
            )
        )
    series = c_index_series(run)
    if series:
        section.figures.append(
            (
                figures.plot_c_index_rounds(series, run.holdout, out / "c_index_rounds.png"),
                "Harrell's C of each evaluating site over the evaluated rounds.",
            )
        )
    return section


def kaplan_meier_section(run: RunResults, out: Path) -> Section:
    """KM of each site's predicted low / high risk halves at the selected round (aggregate grid values)."""
    record = next((r for r in run.rounds if r["round"] == run.selected_round and r.get("evaluate_sites")), None)
    sites = sorted((record or {}).get("evaluate_sites", {}), key=lambda s: (s not in run.holdout, s))
    panels = []
    for site in sites:
        for endpoint in run.endpoints:
            curves = parse_risk_group_km(record["evaluate_sites"][site], endpoint)
            if curves is not None:
                panels.append((f"{site} ({run.role(site)}), {endpoint}", curves))
    if not panels:
        return Section(
            "Kaplan-Meier by predicted risk group",
            note="no site reported risk-group curves at the selected round (older sites, or too few events)",
        )
    body = [
        _p(
            "Each site splits the patients it evaluated at its own median predicted risk and reports the "
            "Kaplan-Meier survival of both halves every 3 months (aggregates, no patient times) and the "
            "log-rank p-value."
        )
    ]
    return Section(
        "Kaplan-Meier by predicted risk group",
        body,
        [
            (
                figures.plot_risk_group_km(panels, max(1, len(run.endpoints)), out / "km_risk_groups.png"),
                "Kaplan-Meier of the predicted low- and high-risk halves per site and endpoint.",
            )
        ],
    )


def calibration_section(run: RunResults) -> Section:
    pngs = [
        (p, p.stem.replace("_", " "))
        for name, p in run.optional.items()
        if name.startswith(("calibration_", "decision_")) and name.endswith(".png")
    ]
    if "baseline_hazard.png" in run.optional:
        pngs.append((run.optional["baseline_hazard.png"], "Federated baseline cumulative hazard (pooled and per site)."))
    if "calibration.json" not in run.optional and not pngs:
        return Section("Calibration", note="no calibration.json / calibration_*.png in this results folder")
    body = [
        _p(
            "Predicted vs Kaplan-Meier observed risk by risk group at the horizons, and decision curves, as "
            "the calibration phase wrote them. Crowson's calibration intercept (0 is ideal) and slope (1 is "
            "ideal) per site; where a site had too few patients or events before a horizon, the reason is "
            "shown instead of an estimate."
        )
    ]
    rows = calibration_rows(run)
    if rows:
        table = [
            [_fmt(r["site"]), _fmt(r["role"]), _fmt(r["endpoint"]), f"{r['years']:g}"]
            + (
                [_fmt(r.get("observed"), 0), _fmt(r.get("expected"), 1), f"{r['intercept']:+.2f}", f"{r['slope']:.2f}"]
                if "skipped" not in r
                else [f'<span class="not-estimated">not estimated: {_fmt(r["skipped"])}</span>'] + [""] * 3
            )
            for r in rows
        ]
        body.append(
            _table(
                ["site", "role", "endpoint", "horizon (years)", "observed events", "expected events", "intercept", "slope"], table
            )
        )
    incidence = [r for r in rows if "observed" in r.get("incidence", {})]
    if incidence:
        body.append(
            _p(
                "Endpoints with a competing event (death): the crude cumulative incidence the model reports, against "
                "the Aalen-Johansen observed incidence (O/E and the pseudo-value calibration slope), next to the "
                "same figures of 1 - S, the risk in a world without the competing event."
            )
        )
        table = [
            [_fmt(r["site"]), _fmt(r["role"]), _fmt(r["endpoint"]), f"{r['years']:g}"]
            + [f"{r['incidence']['observed']:.3f}", f"{r['incidence']['expected']:.3f}"]
            + [f"{f['observed_expected']:.2f} / {f['slope']:.2f}" for f in (r["incidence"], r["incidence"]["without_competing"])]
            for r in incidence
        ]
        headers = ["site", "role", "endpoint", "horizon (years)", "observed incidence", "predicted incidence"]
        body.append(_table(headers + ["O/E / slope, incidence", "O/E / slope, 1 - S"], table))
    return Section("Calibration", body, pngs)


def cross_site_section(run: RunResults) -> Section:
    if "cross_site.csv" not in run.optional:
        return Section("Cross-site matrix", note="no cross_site.csv in this results folder (cross-site validation off)")
    rows = read_csv_rows(run.optional["cross_site.csv"])
    sites = [k for k in rows[0] if k not in ("metric", "endpoint", "model")] if rows else []
    table = [
        [_fmt(r["metric"]), _fmt(r["endpoint"]), _fmt(r["model"])] + [_fmt(float(r[s])) if r[s] else "&ndash;" for s in sites]
        for r in rows
    ]
    section = Section(
        "Cross-site matrix",
        [
            _p("Rows: models (global, and the global model fine-tuned at each training site); columns: evaluating sites."),
            _table(["metric", "endpoint", "model", *sites], table),
        ],
    )
    if "cross_site.png" in run.optional:
        section.figures.append((run.optional["cross_site.png"], "Cross-site C-index matrices."))
    return section


def loco_section(run: RunResults) -> Section | None:
    """Leave-one-centre-out table; None (no section at all) for a run that was not LOCO."""
    if "loco.json" not in run.optional:
        return None
    doc = run.json("loco.json")
    table = [
        [
            _fmt(r.get("held_out")),
            _fmt(r.get("endpoint")),
            _fmt(r.get("c_harrell")),
            _fmt(r.get("c_uno")),
            _fmt(r.get("events")),
            _fmt(r.get("patients")),
        ]
        for r in doc.get("rows", [])
    ]
    for endpoint, s in doc.get("mean", {}).items():
        table.append(
            [
                "<b>mean (sd)</b>",
                _fmt(endpoint),
                f"{_fmt(s.get('c_harrell_mean'))} ({_fmt(s.get('c_harrell_sd'))})",
                f"{_fmt(s.get('c_uno_mean'))} ({_fmt(s.get('c_uno_sd'))})",
                "",
                "",
            ]
        )
    return Section(
        "Leave-one-centre-out", [_table(["held-out centre", "endpoint", "Harrell's C", "Uno's C", "events", "patients"], table)]
    )


def baselines_section(run: RunResults, out: Path) -> Section:
    if "baselines.json" not in run.optional:
        return Section(
            "Comparison with the baselines", note="no baselines.json (write one with `stsfl baselines`, pass it with --baselines)"
        )
    doc = run.json("baselines.json")
    models, endpoints = doc.get("models", {}), doc.get("endpoints", [])
    horizons = sorted({float(h) for m in models.values() for e in m.values() for h in (e.get("td_auc") or {})})
    header = ["model", "endpoint", "patients", "events", "Harrell's C (bootstrap 95 % CI)", "Uno's C"]
    header += [f"td-AUC {h:g} d" for h in horizons] + ["IBS", "log-rank p"]
    table = []
    for name, per_endpoint in models.items():
        for endpoint in endpoints:
            e = per_endpoint.get(endpoint)
            if not e:
                continue
            c = e.get("harrell_c") or {}
            auc = {float(h): v for h, v in (e.get("td_auc") or {}).items()}
            table.append(
                [
                    _fmt(name),
                    _fmt(endpoint),
                    _fmt(e.get("n")),
                    _fmt(e.get("events")),
                    f"{_fmt(c.get('estimate'))} ({_fmt(c.get('low'))}&ndash;{_fmt(c.get('high'))})",
                    _fmt(e.get("uno_c")),
                ]
                + [_fmt(auc.get(h)) for h in horizons]
                + [_fmt(e.get("integrated_brier")), _fmt(e.get("logrank_p"), 4)]
            )
    body = [
        _p(
            f"Pooled (not federated) models on the same test patients ({doc.get('n_test', '?')}), from "
            f"{run.optional['baselines.json'].name}."
        ),
        _table(header, table),
    ]
    oracle = doc.get("oracle_c")
    if oracle:
        body.append(_p("Oracle C-index (the true log-hazard): " + ", ".join(f"{e} {v:.3f}" for e, v in oracle.items())))
    return Section(
        "Comparison with the baselines",
        body,
        [(figures.plot_baselines(models, endpoints, out / "baselines.png"), "Baselines: Harrell's C with CI.")],
    )


# ----------------------------------------------------------------------------- page
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right} td{white-space:nowrap}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left} table.kv td{text-align:left}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.85em;color:#555}
p.note{color:#777;font-style:italic} p.headline{font-size:1.1em;font-weight:600}
"""


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(title: str, sections: list[Section]) -> str:
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    for section in sections:
        anchor = section.title.lower().replace(" ", "-")
        parts.append(f'<section id="{html.escape(anchor)}"><h2>{html.escape(section.title)}</h2>')
        if section.note:
            parts.append(f'<p class="note">Omitted: {html.escape(section.note)}.</p>')
        parts.extend(section.body)
        for path, caption in section.figures:
            parts.append(
                f'<figure><img alt="{html.escape(Path(path).stem)}" src="{_png_data_uri(path)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)


def build_report(results_dir: str | Path, baselines: str | Path | None = None) -> Path:
    """Write <results>/report.html and <results>/report/*.png; returns the HTML path."""
    run = RunResults.load(results_dir, baselines)
    out = run.root / FIGURE_DIR
    out.mkdir(exist_ok=True)
    for stale in out.glob("*.png"):  # figures of an earlier report whose section is gone now
        stale.unlink()
    builders: list[Callable[[], Section | None]] = [
        lambda: run_section(run),
        lambda: cohort_section(run, out),
        lambda: training_section(run, out),
        lambda: evaluation_section(run, out),
        lambda: kaplan_meier_section(run, out),
        lambda: calibration_section(run),
        lambda: cross_site_section(run),
        lambda: loco_section(run),
        lambda: baselines_section(run, out),
    ]
    sections = [s for s in (build() for build in builders) if s is not None]
    name = run.summary.get("federation") or run.federation.get("name") or run.root.name
    path = run.root / REPORT_FILE
    write_text_atomic(path, render_html(f"Federated survival model: {name}", sections))
    return path
