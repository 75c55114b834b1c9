"""What the run report shows, read from a results folder (stsfl.server.reports.results) - aggregates only.

`RunResults.load(root)` reads the files every run writes (summary.json, rounds.jsonl,
statistics.json, federation.yaml, status.json) and notes which optional files other phases add
(cross_site.csv, calibration.json, baseline_hazard.json, baselines.json, ...). The functions below
turn them into the tables and series of the report:

    cohort_rows(run)        one row per site: role, patients, events per endpoint, modality coverage
    calibration_rows(run)   one row per site, endpoint and horizon: calibration fit or why there is none
    head_losses(run)        {"train"|"val": {head: [(round, events-weighted mean over sites)]}}
    blend_series(run)       {head: [(round, blend weight)]}
    c_index_series(run)     {(site, endpoint): [(round, Harrell's C)]}
    evaluation_rows(run)    the selected round's metrics per site and endpoint, with approximate CIs
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stsfl.common.console import UserError
from stsfl.common.site_metrics import events_weighted_mean

HEADS = ("fused", "mri", "wsi", "clinical")
MODALITIES = ("mri", "wsi", "clinical")
Z_95 = 1.959963984540054


@dataclass
class RunResults:
    """The files of one results folder (absent optional files: None / empty)."""

    root: Path
    summary: dict[str, Any]
    rounds: list[dict[str, Any]]
    statistics: dict[str, Any]
    federation: dict[str, Any]
    status: dict[str, Any]
    optional: dict[str, Path] = field(default_factory=dict)

    @staticmethod
    def load(root: str | Path, baselines: str | Path | None = None) -> RunResults:
        """Read `root`; `baselines` is a `stsfl baselines` JSON (default: <root>/baselines.json if there)."""
        root = Path(root)
        if not (root / "rounds.jsonl").is_file():
            raise UserError(f"{root}: not a results folder of sts-server (no rounds.jsonl)")
        rounds = [json.loads(line) for line in (root / "rounds.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        optional = {name: root / name for name in OPTIONAL_FILES if (root / name).is_file()}
        optional.update({p.name: p for p in sorted(root.glob("calibration_*.png")) + sorted(root.glob("decision_*.png"))})
        if baselines is not None:
            if not Path(baselines).is_file():
                raise UserError(f"{baselines}: no such baselines file")
            optional["baselines.json"] = Path(baselines)
        return RunResults(
            root=root,
            summary=_read_json(root / "summary.json"),
            rounds=rounds,
            statistics=_read_json(root / "statistics.json"),
            federation=_read_yaml(root / "federation.yaml"),
            status=_read_json(root / "status.json"),
            optional=optional,
        )

    @property
    def holdout(self) -> list[str]:
        return list(self.summary.get("holdout_sites") or self.federation.get("holdout") or [])

    @property
    def sites(self) -> list[str]:
        return list(self.federation.get("sites") or sorted(self.statistics.get("per_site_counts", {})))

    @property
    def endpoints(self) -> list[str]:
        found = {
            k.removeprefix("eval-events-")
            for r in self.rounds
            for m in r.get("evaluate_sites", {}).values()
            for k in m
            if k.startswith("eval-events-")
        }
        for counts in self.statistics.get("per_site_counts", {}).values():
            found.update(counts.get("events", {}))
        return sorted(found, key=lambda e: (e != "os", e))

    @property
    def selected_round(self) -> int | None:
        return self.summary.get("selected_round") or (self.rounds[-1]["round"] if self.rounds else None)

    def role(self, site: str) -> str:
        return "held out" if site in self.holdout else "training"

    def json(self, name: str) -> Any:
        return _read_json(self.optional[name])


# Files other phases may add; each has its section in the report, omitted with a note when absent.
OPTIONAL_FILES = (
    "cross_site.csv",
    "cross_site.png",
    "calibration.json",
    "baseline_hazard.json",
    "baseline_hazard.png",
    "baselines.json",
    "loco.json",
)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- tables and series
def cohort_rows(run: RunResults) -> list[dict[str, Any]]:
    """Per site: role, the patients and events per endpoint the site used - a training site its
    training split (statistics.json), a held-out centre the patients it evaluated at the selected round
    (it has no training split) -, `counted` saying which, and usable patients and how many have each
    modality (when the site reported them)."""
    counts = run.statistics.get("per_site_counts", {})
    record = next((r for r in run.rounds if r["round"] == run.selected_round and r.get("evaluate_sites")), {})
    rows = []
    for site in run.sites:
        c = counts.get(site, {})
        row = {
            "site": site,
            "role": run.role(site),
            "counted": "training split",
            "patients": c.get("patients"),
            "usable": c.get("usable_patients"),
            "events": dict(c.get("events", {})),
            "modalities": dict(c.get("modalities", {})),
        }
        if site in run.holdout:
            evaluated = record.get("evaluate_sites", {}).get(site, {})
            patients = evaluated.get("eval-patients")
            row.update(
                counted="evaluated (all usable patients)",
                patients=None if patients is None else int(patients),
                events={k.removeprefix("eval-events-"): int(v) for k, v in evaluated.items() if k.startswith("eval-events-")},
            )
        rows.append(row)
    return rows


def calibration_rows(run: RunResults) -> list[dict[str, Any]]:
    """From calibration.json, per site, endpoint and horizon (years): role, observed and expected
    events, intercept and slope - or, where the site could not estimate them, its reason."""
    if "calibration.json" not in run.optional:
        return []
    document = run.json("calibration.json")
    rows = []
    for site, reply in sorted(document.get("sites", {}).items(), key=lambda item: (item[0] not in run.holdout, item[0])):
        for endpoint, horizons in sorted(reply.get("endpoints", {}).items(), key=lambda item: (item[0] != "os", item[0])):
            for horizon, entry in sorted(horizons.items(), key=lambda item: float(item[0])):
                rows.append(
                    {"site": site, "role": run.role(site), "endpoint": endpoint, "years": float(horizon) / 365.25, **entry}
                )
    return rows


def head_losses(run: RunResults) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per split ("train", "val") and head: the events-weighted mean over training sites per round
    (a site without a validation split - it reports val losses of 0 with no events - is skipped)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {"train": {}, "val": {}}
    for record in run.rounds:
        sites = record.get("train_sites", {})
        for split in out:
            for head in HEADS:
                value = events_weighted_mean(sites, f"{split}-loss-{head}", skip_zero=split == "val")
                if value is not None:
                    out[split].setdefault(head, []).append((record["round"], value))
    return {split: heads for split, heads in out.items() if heads}


def blend_series(run: RunResults) -> dict[str, list[tuple[int, float]]]:
    """The blend weight of each head sent with each round (the weights the round trained with)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in run.rounds:
        for head, weight in (record.get("blend_weights") or {}).items():
            out.setdefault(head, []).append((record["round"], float(weight)))
    return out


def c_index_series(run: RunResults) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """Harrell's C of every evaluating site and endpoint over the evaluated rounds."""
    out: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for record in run.rounds:
        for site, metrics in sorted(record.get("evaluate_sites", {}).items()):
            for endpoint in run.endpoints:
                key = f"c-harrell-{endpoint}"
                if key in metrics:
                    out.setdefault((site, endpoint), []).append((record["round"], float(metrics[key])))
    return out


def c_index_ci(c: float, events: float, patients: float) -> tuple[float, float] | None:
    """Approximate 95 % CI of a C-index from aggregates alone (Hanley & McNeil 1982: the AUC
    standard error with n1 = events and n2 = patients without the event).

    Sites report no per-patient risks, so a bootstrap is not possible at the coordinator; this
    interval treats the C-index as an AUC of events vs non-events and ignores censoring, so it is
    indicative (usually a little narrow for heavily censored data). None when undefined."""
    n1, n2 = float(events), float(patients) - float(events)
    if n1 < 1 or n2 < 1 or not 0.0 < c < 1.0:
        return None
    q1, q2 = c / (2.0 - c), 2.0 * c * c / (1.0 + c)
    var = (c * (1 - c) + (n1 - 1) * (q1 - c * c) + (n2 - 1) * (q2 - c * c)) / (n1 * n2)
    se = math.sqrt(max(var, 0.0))
    return max(0.0, c - Z_95 * se), min(1.0, c + Z_95 * se)


@dataclass
class EvaluationRow:
    """One site and endpoint at the selected round: C-indices, td-AUCs, IBS, events."""

    site: str
    role: str
    endpoint: str
    events: float | None
    patients: float | None
    harrell: float | None
    harrell_ci: tuple[float, float] | None
    uno: float | None
    auc: dict[float, float]
    ibs: float | None


def evaluation_rows(run: RunResults, round_: int | None = None) -> list[EvaluationRow]:
    """The metrics every site reported at `round_` (default: the selected round), held-out first."""
    round_ = run.selected_round if round_ is None else round_
    record = next((r for r in run.rounds if r["round"] == round_ and r.get("evaluate_sites")), None)
    if record is None:
        return []
    rows = []
    sites = sorted(record["evaluate_sites"], key=lambda s: (s not in run.holdout, s))
    for site in sites:
        m = record["evaluate_sites"][site]
        patients = m.get("eval-patients")
        for endpoint in run.endpoints:
            events = m.get(f"eval-events-{endpoint}")
            harrell = m.get(f"c-harrell-{endpoint}")
            suffix = f"d-{endpoint}"
            auc = {float(k[4 : -len(suffix)]): float(v) for k, v in m.items() if k.startswith("auc-") and k.endswith(suffix)}
            ci = c_index_ci(harrell, events, patients) if None not in (harrell, events, patients) else None
            rows.append(
                EvaluationRow(
                    site,
                    run.role(site),
                    endpoint,
                    events,
                    patients,
                    harrell,
                    ci,
                    m.get(f"c-uno-{endpoint}"),
                    dict(sorted(auc.items())),
                    m.get(f"ibs-{endpoint}"),
                )
            )
    return rows
