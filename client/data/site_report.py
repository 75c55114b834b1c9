"""What `sts-client validate` reports: usable patients per modality and endpoint, events per
endpoint, every problem with its location, and whether the site can train at all."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from stsfl.client.problems import Problem
from stsfl.client.data.site_prepare import PreparedSite


@dataclass
class SiteSummary:
    n_csv_rows: int
    n_usable: int
    n_excluded: int
    modality_counts: dict[str, int]
    endpoint_counts: dict[str, tuple[int, int]]  # endpoint -> (patients with it, events)


def summarise(prepared: PreparedSite) -> SiteSummary:
    patients = prepared.patients
    endpoints = {}
    for k, name in enumerate(prepared.schema.endpoint_names):
        observed = [p.record for p in patients if p.record.observed[k]]
        endpoints[name] = (len(observed), int(sum(r.event[k] for r in observed)))
    return SiteSummary(
        n_csv_rows=prepared.n_csv_rows,
        n_usable=len(patients),
        n_excluded=len(prepared.excluded),
        modality_counts={
            "mri": sum(p.mri_key is not None for p in patients),
            "wsi": sum(p.wsi_key is not None for p in patients),
            "clinical": len(patients),
        },
        endpoint_counts=endpoints,
    )


def training_blockers(summary: SiteSummary, problems: list[Problem], policy: str) -> list[str]:
    """Why the site cannot train at all (empty: it can)."""
    blockers = []
    if summary.n_usable == 0:
        blockers.append("no usable patient")
    if not any(events for _, events in summary.endpoint_counts.values()):
        blockers.append("no event for any endpoint among the usable patients (a Cox model needs events)")
    if policy == "fail" and any(p.severity == "error" for p in problems):
        blockers.append("bad_patient_policy is 'fail' and the site has bad patients")
    return blockers


def problems_table(problems: list[Problem]) -> Table:
    table = Table(title=f"Problems ({len(problems)})", show_lines=False)
    for col in ("severity", "file", "patient", "column", "reason"):
        table.add_column(col, overflow="fold")
    for p in problems:
        style = "red" if p.severity == "error" else "yellow"
        table.add_row(f"[{style}]{p.severity}[/]", p.file or "", p.patient or "", p.column or "", p.reason)
    return table


def print_report(console: Console, prepared: PreparedSite, summary: SiteSummary, blockers: list[str]) -> None:
    usable = Table(title=f"Site {prepared.name}: usable patients")
    usable.add_column("what")
    usable.add_column("patients", justify="right")
    usable.add_column("events", justify="right")
    usable.add_row("rows in clinical table", str(summary.n_csv_rows), "")
    usable.add_row("usable patients", str(summary.n_usable), "")
    usable.add_row("excluded patients", str(summary.n_excluded), "")
    for modality, count in summary.modality_counts.items():
        usable.add_row(f"with {modality}", str(count), "")
    for endpoint, (count, events) in summary.endpoint_counts.items():
        usable.add_row(f"endpoint {endpoint}", str(count), str(events))
    console.print(usable)
    if prepared.problems:
        console.print(problems_table(prepared.problems))
    console.print(f"patch encoder fingerprint: {prepared.encoder_fingerprint or '-'}   cache: {prepared.cache.root}")
    if blockers:
        console.print("[bold red]the site cannot train:[/] " + "; ".join(blockers))
    else:
        console.print("[bold green]the site can train[/]")


VALIDATION_REPORT = "validation_report"  # .html and .txt
PROBLEMS_CSV = "problems.csv"


def write_validation_report(prepared: PreparedSite, policy: str, folder: Path, title: str) -> int:
    """What `sts-client validate` prints, as files for the site's IT team: validation_report.html
    (self-contained), validation_report.txt and problems.csv (one row per problem with its
    location). Returns the number of problems."""
    summary = summarise(prepared)
    console = Console(record=True, width=120, file=io.StringIO(), color_system="truecolor")
    console.print(f"[bold]{title}[/]")
    print_report(console, prepared, summary, training_blockers(summary, prepared.problems, policy))
    (folder / f"{VALIDATION_REPORT}.txt").write_text(console.export_text(clear=False), encoding="utf-8")
    (folder / f"{VALIDATION_REPORT}.html").write_text(console.export_html(inline_styles=True, clear=False), encoding="utf-8")
    with open(folder / PROBLEMS_CSV, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("severity", "file", "patient", "column", "reason"))
        writer.writerows((p.severity, p.file or "", p.patient or "", p.column or "", p.reason) for p in prepared.problems)
    return len(prepared.problems)
