"""`stsfl schema draft clinical.csv`: a first clinical schema from a hospital's own table.

Every column is guessed from its cells and every guess is written with a `# REVIEW:` comment
saying what was seen, for a person to confirm before the schema is shared with the federation:
- the patient id: a column named like an id (patient_id, pid, id, ...), else the first column
  whose cells are all different;
- endpoints: column pairs `<name>_time` / `<name>_event` (also `T` / `E`, `time` / `event`);
- binary: every cell 0/1, yes/no or true/false (what stsfl.client.data.clinical_table accepts);
- continuous: every cell a number (the range seen is noted, no `min` / `max` is set: they are
  validity limits, and a later patient may lie outside what one hospital has seen so far);
- categorical: anything else with at most `max_categories` values (the categories seen);
- columns with more values than that (free text, dates) are left out and listed;
- the MRI radiomics every site computes from its crops (stsfl.common.radiomics, `source: mri`)
  follow the table's variables (delete them for a federation without MRI).
Missing cells (empty, NA, N/A, NaN, null) are ignored when guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

# read cells exactly as the site's clinical table will be read
from stsfl.client.data.clinical_table import BINARY_TOKENS, _is_missing
from stsfl.client.data.clinical_table import _parse_number as _number
from stsfl.common.config import ClinicalSchema, parse_config
from stsfl.common.console import UserError
from stsfl.common.radiomics import RADIOMICS_FEATURES

ID_NAMES = ("patient_id", "patientid", "patient", "pid", "id", "subject_id", "case_id")
ENDPOINT_PAIRS = (
    (re.compile(r"^(?P<name>.+)_time$", re.I), "{name}_event"),
    (re.compile(r"^(?P<name>T)$"), "E"),
    (re.compile(r"^(?P<name>time)$", re.I), "event"),
)


@dataclass
class SchemaDraft:
    """The schema guessed from one CSV (`data`, as YAML data) and one review note per entry."""

    data: dict
    notes: dict[str, str] = field(default_factory=dict)  # column -> what was guessed and why
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why it is not in the draft


def _cells(frame: pd.DataFrame, column: str) -> list[str]:
    return [c.strip() for c in frame[column] if not _is_missing(c)]


def _id_column(frame: pd.DataFrame) -> tuple[str, str]:
    by_name = {c.lower(): c for c in frame.columns}
    for name in ID_NAMES:
        if name in by_name:
            return by_name[name], "named like a patient id"
    for column in frame.columns:
        cells = _cells(frame, column)
        if cells and len(set(cells)) == len(frame):
            return column, "the first column whose cells are all different"
    raise UserError("no column can be the patient id (none is named like one and none has a different value in every row)")


def _endpoints(columns: list[str]) -> list[tuple[str, str, str]]:
    """(endpoint name, time column, event column) for every time/event column pair."""
    found = []
    for column in columns:
        for pattern, event_template in ENDPOINT_PAIRS:
            match = pattern.match(column)
            if match:
                event = event_template.format(name=match["name"])
                event = next((c for c in columns if c.lower() == event.lower()), None)
                if event:
                    found.append((match["name"].lower() if match["name"] != "T" else "survival", column, event))
                break
    return found


def _variable(name: str, cells: list[str], max_categories: int) -> tuple[dict | None, str]:
    """(the variable's YAML data or None when left out, the note saying why)."""
    if not cells:
        return None, "every cell is missing"
    if all(c.lower() in BINARY_TOKENS or _number(c) in (0.0, 1.0) for c in cells):
        return {"name": name, "kind": "binary"}, f"binary: every cell is one of {sorted(set(cells))}"
    numbers = [_number(c) for c in cells]
    if all(n is not None for n in numbers):
        codes = sorted(set(numbers))
        code_hint = (
            f"; only {len(codes)} different whole numbers: if they are codes (e.g. a grade), make it "
            f"kind: categorical with categories {[f'{c:g}' for c in codes]}"
            if len(codes) <= 5 and all(float(c).is_integer() for c in codes)
            else ""
        )
        return (
            {"name": name, "kind": "continuous", "unit": None},
            f"continuous: every cell a number, seen {min(numbers):g} to {max(numbers):g}; set `unit` "
            f"(and `min` / `max` if values outside a range are errors){code_hint}",
        )
    spellings: dict[str, list[str]] = {}  # categories match without regard to case (clinical_table)
    for cell in cells:
        spellings.setdefault(cell.lower(), []).append(cell)
    if len(spellings) > max_categories:
        return None, f"{len(spellings)} different values (free text or dates?): more than {max_categories} categories"
    values = sorted((max(sorted(set(seen)), key=seen.count) for seen in spellings.values()), key=str.lower)
    mixed = [v for v in values if len(set(spellings[v.lower()])) > 1]
    return (
        {"name": name, "kind": "categorical", "categories": values},
        f"categorical: the {len(values)} values seen; add categories other hospitals may have"
        + (f"; written in several cases: {', '.join(mixed)} (matched without regard to case)" if mixed else ""),
    )


def draft_schema(csv_path: Path, max_categories: int = 20) -> SchemaDraft:
    """Guess a ClinicalSchema from `csv_path`; the draft is valid (checked) but every entry needs review."""
    csv_path = Path(csv_path)
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{csv_path}: cannot read the clinical table ({err})") from None
    id_column, id_note = _id_column(frame)
    draft = SchemaDraft({"patient_id_column": id_column, "variables": [], "endpoints": []}, {id_column: f"patient id: {id_note}"})
    for endpoint, time_column, event_column in _endpoints([c for c in frame.columns if c != id_column]):
        draft.data["endpoints"].append(
            {"name": endpoint, "label": endpoint, "time_column": time_column, "event_column": event_column}
        )
        draft.notes[time_column] = (
            f"endpoint {endpoint!r}: time (days) in {time_column}, event 0/1 in {event_column}; give it a readable `label`"
        )
    taken = {id_column} | {c for e in draft.data["endpoints"] for c in (e["time_column"], e["event_column"])}
    for column in frame.columns:
        if column in taken:
            continue
        variable, note = _variable(column, _cells(frame, column), max_categories)
        if variable is None:
            draft.left_out[column] = note
        else:
            draft.data["variables"].append(variable)
            draft.notes[column] = note
    names = {v["name"] for v in draft.data["variables"]}
    for name in RADIOMICS_FEATURES:
        if name not in names and name not in frame.columns:
            draft.data["variables"].append({"name": name, "kind": "continuous", "source": "mri"})
            draft.notes[name] = "MRI radiomics the site computes from each patient's crop (not a column); delete without MRI"
    parse_config(draft.data, ClinicalSchema, f"schema draft of {csv_path}")  # a draft that does not load helps nobody
    return draft


def _block(data: dict, indent: str) -> str:
    text = yaml.safe_dump([data], sort_keys=False, allow_unicode=True, width=100)
    return "".join(indent + line + "\n" for line in text.splitlines())


def render_draft(draft: SchemaDraft, csv_path: Path) -> str:
    """The draft as a commented schema YAML: one `# REVIEW:` line above every guessed entry."""
    lines = [
        f"# Schema DRAFT guessed by `stsfl schema draft` from {Path(csv_path).name}.",
        "# Review every `# REVIEW:` line, then share the file with the coordinator: every site and the",
        "# coordinator must use the same schema (site YAML and federation YAML key `schema_file`).",
        f"# REVIEW: {draft.notes[draft.data['patient_id_column']]}",
        yaml.safe_dump({"patient_id_column": draft.data["patient_id_column"]}).rstrip(),
        "variables:",
    ]
    for variable in draft.data["variables"]:
        lines.append(f"  # REVIEW: {variable['name']}: {draft.notes[variable['name']]}")
        lines.append(_block(variable, "  ").rstrip("\n"))
    lines.append(
        "endpoints:"
        if draft.data["endpoints"]
        else "# REVIEW: no <name>_time / <name>_event column pair found: add the endpoints\nendpoints: []"
    )
    for endpoint in draft.data["endpoints"]:
        lines.append(f"  # REVIEW: {draft.notes[endpoint['time_column']]}")
        lines.append(_block(endpoint, "  ").rstrip("\n"))
    for column, why in draft.left_out.items():
        lines.append(f"# REVIEW: column {column!r} left out: {why}")
    return "\n".join(lines) + "\n"
