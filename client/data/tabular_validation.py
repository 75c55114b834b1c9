"""`sts-client validate` for a tabular site (federation `task: linear-cox`): the site's one CSV
checked against the contract of stsfl.tasks.linear_cox.site, and what the site would train on.

Checked: the file reads; `E` (0/1) and `T` (days, >= 0, none missing) are there; every feature
column is numeric; patient ids (first column) are unique; `fold`, when present, holds only `train`
and `test`; there is at least one event among the training rows. Reported: rows per fold, events,
the feature columns, missing feature cells (the linear Cox model cannot use a row with one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from stsfl.common.config import SiteConfig
from stsfl.tasks.linear_cox.site import EVENT, FOLD, TIME, feature_columns, read_table

FOLDS = ("train", "test")


@dataclass
class TabularSummary:
    """What a tabular site holds, and why it cannot train (empty `blockers`: it can)."""

    csv_path: Path
    rows: dict[str, int]  # fold -> rows
    events: dict[str, int]  # fold -> events
    features: list[str]
    missing_cells: dict[str, int]  # feature -> empty cells
    blockers: list[str]


def check_tabular_site(site: SiteConfig, site_yaml: Path) -> TabularSummary:
    """Read and check the site's clinical CSV (layout.clinical_csv under root) as a tabular site."""
    csv_path = site.root_dir(site_yaml) / site.layout.clinical_csv
    try:
        frame = read_table(csv_path)
    except ValueError as err:
        return TabularSummary(csv_path, {}, {}, [], {}, [str(err)])
    blockers = []
    fold = frame[FOLD].astype(str) if FOLD in frame.columns else None
    if fold is not None and not fold.isin(FOLDS).all():
        bad = sorted(set(fold[~fold.isin(FOLDS)]))[:5]
        blockers.append(f"{csv_path}: column fold holds {', '.join(map(repr, bad))}; only 'train' and 'test' are allowed")
    ids = frame.iloc[:, 0].astype(str)
    if ids.duplicated().any():
        blockers.append(
            f"{csv_path}: patient id {ids[ids.duplicated()].iloc[0]!r} (column {frame.columns[0]!r}) appears more than once"
        )
    features = feature_columns(frame)
    if not features:
        blockers.append(f"{csv_path}: no feature column between the patient id and E / T")
    folds = fold if fold is not None else frame[EVENT].map(lambda _: "train")
    rows = {name: int((folds == name).sum()) for name in FOLDS}
    events = {name: int(frame.loc[folds == name, EVENT].sum()) for name in FOLDS}
    if events["train"] == 0 and not blockers:
        blockers.append(f"{csv_path}: no event (E = 1) among the training rows: a Cox model needs events")
    missing = {c: int(frame[c].isna().sum()) for c in features if frame[c].isna().any()}
    if missing:
        blockers.append(f"{csv_path}: empty feature cells in {', '.join(missing)}: impute them or leave those rows out")
    return TabularSummary(csv_path, rows, events, features, missing, blockers)


def print_tabular_report(out: Console, summary: TabularSummary) -> None:
    """The counts table, the features, then either the blockers or "can train"."""
    if summary.rows:
        table = Table(title=f"Tabular site: {summary.csv_path}")
        for column in ("fold", "rows", f"events ({EVENT} = 1)"):
            table.add_column(column)
        for fold in FOLDS:
            table.add_row(fold, str(summary.rows[fold]), str(summary.events[fold]))
        out.print(table)
        out.print(
            f"{len(summary.features)} feature columns: {', '.join(summary.features)}; time column {TIME} (days)",
            markup=False,
            highlight=False,
        )
    for blocker in summary.blockers:
        out.print(f"the site cannot train: {blocker}", markup=False, highlight=False)
    if not summary.blockers:
        out.print("the site can train (task linear-cox)")
