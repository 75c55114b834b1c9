"""The demo's last screen: held-out C of the federated network next to what it has to beat."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

ROWS = (
    ("federated network (selected round, network shares)", "holdout_selected"),
    ("linear Cox model, clinical + MRI radiomics (federated, where the network started)", "holdout_start"),
    ("clinical Cox model (federated)", "holdout_clinical_cox"),
)


def demo_table(summary: dict, cohort: dict, results: Path) -> Table:
    """One row per model, one column per endpoint: Harrell's C at the held-out centre; the last
    row is the oracle (the generator's true log-hazard on the same patients)."""
    site = summary["holdout_sites"][0]
    centre = cohort["centres"].get(site, {})
    oracle = centre.get("oracle_c", {})
    endpoints = sorted(oracle) or sorted(
        k.removeprefix("c-harrell-")
        for k in (summary.get("holdout_selected") or {}).get(site) or {}
        if k.startswith("c-harrell-")
    )
    table = Table(
        title=f"Held-out centre {site} ({centre.get('patients', '?')} patients): Harrell's C",
        caption=f"report: {results / 'report.html'}",
    )
    table.add_column("model")
    for endpoint in endpoints:
        events = (centre.get("events") or {}).get(endpoint)
        table.add_column(endpoint + (f" ({events} events)" if events is not None else ""), justify="right")
    for label, key in ROWS:
        metrics = (summary.get(key) or {}).get(site)
        if key == "holdout_start" and metrics is None:
            continue  # no radiomics in the schema: the start is the clinical Cox model
        metrics = metrics or {}
        table.add_row(label, *(_c(metrics.get(f"c-harrell-{e}")) for e in endpoints))
    table.add_row("oracle (the true log-hazard)", *(_c(oracle.get(e)) for e in endpoints))
    return table


def _c(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
