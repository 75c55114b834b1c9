"""Cohort summary: counts, coverage, events, first events by cause (dm, lr, death, none), follow-up and
the oracle C-index per centre and endpoint.

The oracle C-index is Harrell's C of the true log-hazard (lifelines' concordance_index): what a
model that knew the generating hazard would reach. The clinical-only oracle uses the clinical
part alone, the best a model without images can do here (the imaging latents are independent
of the clinical variables).
"""

from __future__ import annotations

import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index
from rich import box
from rich.table import Table

from stsfl.client.lab.synthetic.hazard import ENDPOINTS


def oracle_c(frame: pd.DataFrame, endpoint: str, score: str = "log_hazard") -> float | None:
    """Harrell's C of column `{endpoint}_{score}` against the endpoint's outcome (None: no comparable pair)."""
    rows = frame.dropna(subset=[f"{endpoint}_time", f"{endpoint}_event"])
    try:
        value = concordance_index(rows[f"{endpoint}_time"], -rows[f"{endpoint}_{score}"], rows[f"{endpoint}_event"])
    except ZeroDivisionError:  # lifelines' way of saying there is no admissible pair
        return None
    return round(float(value), 4)


def median_follow_up_days(frame: pd.DataFrame) -> float | None:
    """Reverse Kaplan-Meier median follow-up of OS (censoring treated as the event)."""
    fitter = KaplanMeierFitter().fit(frame["os_time"], 1 - frame["os_event"])
    median = fitter.median_survival_time_
    return None if pd.isna(median) or median == float("inf") else float(median)


def _summary(rows: pd.DataFrame) -> dict[str, object]:
    return {
        "patients": len(rows),
        "with_mri": int(rows["has_mri"].sum()),
        "with_wsi": int(rows["has_wsi"].sum()),
        "events": {e: int(rows[f"{e}_event"].fillna(0).sum()) for e in ENDPOINTS},
        "followed": {e: int(rows[f"{e}_event"].notna().sum()) for e in ENDPOINTS},
        "first_events": {str(cause): int(n) for cause, n in rows["first_event"].value_counts().sort_index().items()},
        "median_follow_up_days": median_follow_up_days(rows),
        "oracle_c": {e: oracle_c(rows, e) for e in ENDPOINTS},
        "clinical_oracle_c": {e: oracle_c(rows, e, "clinical") for e in ENDPOINTS},
    }


def summarise(frame: pd.DataFrame) -> dict[str, object]:
    """`{"centres": {name: summary}, "pooled": summary}` of a frame of patient records.

    Pooled C compares patients across centres, so it uses the full log-hazard including the
    centre offset; per centre the offset is a constant and does not matter.
    """
    return {
        "centres": {str(name): _summary(rows) for name, rows in frame.groupby("centre", sort=True)},
        "pooled": _summary(frame),
    }


def _c(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def summary_table(cohort: dict[str, object]) -> Table:
    """A rich table of cohort.json: one row per centre and a pooled row (fits 80 columns with three
    endpoints: the events of all endpoints share a column, and so do each endpoint's two C's)."""
    endpoints = list(ENDPOINTS)
    table = Table(
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        title=f"Synthetic STS cohort (seed {cohort['seed']})",
        caption="n: patients; MRI, WSI: % with that modality; events per endpoint\n"
        "(dm: of the patients followed for DM); FU d: reverse Kaplan-Meier median\n"
        "follow-up (OS, days); C: oracle C, Harrell's C of the true log-hazard,\n"
        "/clin.: of its clinical part alone (the best a model without images can do)",
    )
    table.add_column("centre", no_wrap=True)
    for header in ["n", "MRI\n%", "WSI\n%", "events\n" + "/".join(endpoints), "FU\nd"]:
        table.add_column(header, justify="right", no_wrap=True)
    for e in endpoints:
        table.add_column(f"C {e}\n/clin.", justify="right", no_wrap=True, min_width=9)
    rows = [*cohort["centres"].items(), ("pooled", cohort["pooled"])]
    for name, row in rows:
        n = row["patients"]
        follow = row["median_follow_up_days"]
        table.add_row(
            name,
            str(n),
            f"{100 * row['with_mri'] / n:.0f}",
            f"{100 * row['with_wsi'] / n:.0f}",
            "/".join(str(row["events"].get(e, 0)) for e in endpoints),
            "-" if follow is None else f"{follow:.0f}",
            *(f"{_c(row['oracle_c'].get(e))}/{_c(row['clinical_oracle_c'].get(e))}" for e in endpoints),
            end_section=name == rows[-2][0],
        )
    return table
