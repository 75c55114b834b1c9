"""Read a site's clinical.csv against the federation's ClinicalSchema.

Every cell is checked; a bad cell makes its patient bad (reported with file, patient and column).
Missing cells (empty, NA, N/A, NaN, null) are data: a missing variable is handled by the
encoding's missing rule, an endpoint with both cells missing is simply not observed.
Categories match the schema ignoring case and surrounding spaces.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stsfl.client.problems import Problem, ProblemLog, SiteUnusableError
from stsfl.common.config import ClinicalSchema, ClinicalVariable

MISSING_TOKENS = {"", "na", "n/a", "nan", "null"}
BINARY_TOKENS = {"0": 0.0, "1": 1.0, "no": 0.0, "yes": 1.0, "false": 0.0, "true": 1.0}

Value = float | str | None


@dataclass
class ClinicalRecord:
    """One patient's row: raw variable values (float, category or None = missing) and endpoints.
    time, event: [K] lists in schema endpoint order; observed[k] False when endpoint k is absent."""

    pid: str
    line: int
    values: dict[str, Value]
    time: list[float]
    event: list[float]
    observed: list[bool]


@dataclass
class ClinicalTable:
    """The usable rows of clinical.csv, by patient id (bad rows are left out and reported)."""

    path: Path
    records: dict[str, ClinicalRecord]
    n_rows: int
    all_ids: set[str]


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_TOKENS


def _parse_number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_variable(var: ClinicalVariable, cell: str) -> Value:
    """The value of one cell, or raise ValueError with the reason it is unusable."""
    if _is_missing(cell):
        return None
    text = cell.strip()
    if var.kind == "categorical":
        by_lower = {c.lower(): c for c in var.categories or []}
        if text.lower() not in by_lower:
            raise ValueError(f"category {text!r} is not in the schema ({', '.join(var.categories or [])})")
        return by_lower[text.lower()]
    if var.kind == "binary":
        number = _parse_number(text)
        key = text.lower() if number is None else ("1" if number == 1 else "0" if number == 0 else text)
        if key not in BINARY_TOKENS:
            raise ValueError(f"{text!r} is not a binary value (0/1, yes/no, true/false)")
        return BINARY_TOKENS[key]
    number = _parse_number(text)
    if number is None:
        raise ValueError(f"{text!r} is not a number")
    if (var.min is not None and number < var.min) or (var.max is not None and number > var.max):
        raise ValueError(f"{number:g} is outside the schema range [{var.min}, {var.max}]")
    return number


def parse_endpoint(time_cell: str, event_cell: str) -> tuple[float, float, bool]:
    """(time, event, observed) of one endpoint; raise ValueError((column_role, reason)) when unusable."""
    if _is_missing(time_cell) and _is_missing(event_cell):
        return math.nan, 0.0, False
    if _is_missing(time_cell) or _is_missing(event_cell):
        role = "time" if _is_missing(time_cell) else "event"
        raise ValueError((role, f"{role} is missing while the endpoint's other column is given"))
    time = _parse_number(time_cell)
    if time is None:
        raise ValueError(("time", f"time {time_cell.strip()!r} is not a number"))
    if time <= 0:
        raise ValueError(("time", f"time {time:g} must be positive (days from diagnosis)"))
    event = _parse_number(event_cell)
    if event not in (0.0, 1.0):
        raise ValueError(("event", f"event {event_cell.strip()!r} is not 0 or 1"))
    return time, event, True


def endpoint_columns(schema: ClinicalSchema) -> list[str]:
    return [c for e in schema.endpoints for c in (e.time_column, e.event_column)]


def required_columns(schema: ClinicalSchema, outcomes: bool = True) -> list[str]:
    cols = [schema.patient_id_column] + [v.name for v in schema.table_variables]
    return cols + (endpoint_columns(schema) if outcomes else [])


def read_clinical_csv(path: Path, schema: ClinicalSchema, problems: ProblemLog, outcomes_required: bool = True) -> ClinicalTable:
    """Parse clinical.csv. Raises SiteUnusableError when the file cannot be read or lacks a
    required column; records a problem (and leaves the row out) for every bad row.
    outcomes_required False (new patients to predict for): absent endpoint columns mean no outcome."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # A first data row longer than the header would otherwise become a silent index or be
            # truncated; a longer later row is pandas' ParserError. Both: the file is malformed.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False)
    except pd.errors.ParserWarning:
        raise SiteUnusableError(
            [Problem("cannot read clinical table: line 2 has more cells than the header", str(path))]
        ) from None
    except FileNotFoundError:
        raise SiteUnusableError([Problem("clinical table not found", str(path))]) from None
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise SiteUnusableError([Problem(f"cannot read clinical table: {err}", str(path))]) from None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in required_columns(schema, outcomes_required) if c not in frame.columns]
    if missing:
        raise SiteUnusableError([Problem("required column missing", str(path), None, c) for c in missing])
    for column in endpoint_columns(schema):
        if column not in frame.columns:
            frame[column] = ""

    id_col = schema.patient_id_column
    ids = frame[id_col].str.strip()
    duplicated = set(ids[ids.duplicated(keep=False)]) - {""}
    records: dict[str, ClinicalRecord] = {}
    for index, row in frame.iterrows():
        line = int(index) + 2  # header is line 1
        pid = ids[index]
        where = f"{path}:{line}"
        if not pid:
            problems.error("empty patient id", where, None, id_col)
            continue
        if pid in duplicated:
            problems.error("duplicate patient id (every row with this id is left out)", where, pid, id_col)
            continue
        record = _parse_row(row, pid, line, where, schema, problems)
        if record is not None:
            records[pid] = record
    return ClinicalTable(path, records, len(frame), set(ids) - {""})


def _parse_row(row, pid: str, line: int, where: str, schema: ClinicalSchema, problems: ProblemLog) -> ClinicalRecord | None:
    ok = True
    values: dict[str, Value] = {v.name: None for v in schema.mri_variables}  # set from the MRI crop (site_prepare)
    for var in schema.table_variables:
        try:
            values[var.name] = parse_variable(var, row[var.name])
        except ValueError as err:
            problems.error(str(err), where, pid, var.name)
            ok = False
    times, events, observed = [], [], []
    for ep in schema.endpoints:
        try:
            t, e, seen = parse_endpoint(row[ep.time_column], row[ep.event_column])
        except ValueError as err:
            role, reason = err.args[0]
            problems.error(reason, where, pid, ep.time_column if role == "time" else ep.event_column)
            ok = False
            continue
        times.append(t)
        events.append(e)
        observed.append(seen)
    return ClinicalRecord(pid, line, values, times, events, observed) if ok else None
