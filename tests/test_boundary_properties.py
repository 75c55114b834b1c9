"""Property-based tests (hypothesis) of the two places where outside text enters the product: the
YAML config loader and a site's clinical.csv reader. Whatever the input, the result is a valid
object or the project's own error naming the file (and key path / row / column) - never another
exception. Run with `--hypothesis-show-statistics` to see the number of examples."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from site_builder import COLUMNS, clinical_row

from stsfl.client.data.clinical_table import read_clinical_csv
from stsfl.client.problems import BadPatientError, ProblemLog, SiteUnusableError
from stsfl.common.config import (
    ClinicalSchema,
    ConfigError,
    FederationConfig,
    ModelPreset,
    SiteConfig,
    bundled_path,
    load_config,
    load_schema,
    parse_config,
    read_yaml,
)

SCHEMA = load_schema()
EXAMPLES = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
SOURCE = "conf/federation.yaml"

# ---------------------------------------------------------------------------- config loader
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.dates(),
)


def _keys(model) -> list[str]:
    """Every field name of a config model and its nested models (so generated mappings reach deep)."""
    names: set[str] = set()
    stack = [model]
    while stack:
        current = stack.pop()
        for name, field in current.model_fields.items():
            names.add(name)
            for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
                if isinstance(candidate, type) and hasattr(candidate, "model_fields") and candidate not in stack:
                    stack.append(candidate)
    return sorted(names)


def yamlish(model) -> st.SearchStrategy:
    """Nested mappings and lists whose keys are mostly the model's own field names."""
    keys = st.one_of(st.sampled_from(_keys(model)), st.text(max_size=8), st.integers(0, 3))
    return st.recursive(
        scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=6)), max_leaves=25
    )


def _valid_documents() -> dict:
    federation = yaml.safe_load(bundled_path("federation.yaml").read_text())
    return {
        FederationConfig: federation,
        ClinicalSchema: yaml.safe_load(bundled_path("schema.yaml").read_text()),
        ModelPreset: yaml.safe_load(bundled_path("presets/cpu-small.yaml").read_text()),
        SiteConfig: {"name": "site_a", "root": "/data/site_a", "layout": {"clinical_csv": "clinical.csv"}},
    }


VALID = _valid_documents()
MODELS = sorted(VALID, key=lambda m: m.__name__)


def _assert_names_the_file(err: ConfigError, source: str) -> None:
    lines = str(err).splitlines()
    problems = [line.strip() for line in lines[1:]] if lines[0] == "invalid configuration" else lines[:1]
    assert problems and all(p.startswith(f"{source}: ") for p in problems), str(err)


def _parse_or_clear_error(data, model, source: str = SOURCE):
    try:
        return parse_config(data, model, source)
    except ConfigError as err:
        _assert_names_the_file(err, source)
        return err


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@EXAMPLES
@given(data=st.data())
def test_any_mapping_gives_a_config_or_a_config_error(model, data):
    document = data.draw(st.one_of(yamlish(model), st.dictionaries(st.sampled_from(_keys(model)), yamlish(model), max_size=8)))
    result = _parse_or_clear_error(document, model)
    assert isinstance(result, (model, ConfigError))


def _paths(document, prefix=()) -> list[tuple]:
    """Key paths of every mapping inside `document` (where a key can be added or replaced)."""
    out = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            out += _paths(value, prefix + (index,))
    return out


def _with(document, path: tuple, key, value):
    """A copy of `document` with `key: value` set in the mapping at `path` (or the element replaced)."""
    if not path:
        return {**document, key: value} if isinstance(document, dict) else value
    head, rest = path[0], path[1:]
    copy = list(document) if isinstance(document, list) else dict(document)
    copy[head] = _with(document[head], rest, key, value)
    return copy


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@EXAMPLES
@given(data=st.data())
def test_one_changed_value_in_a_valid_file_is_named_by_its_key_path(model, data):
    """A valid document with one value replaced anywhere: valid, or an error; an unknown key added to
    a mapping is reported at exactly its key path."""
    document = VALID[model]
    path = data.draw(st.sampled_from([p for p in _paths(document) if isinstance(_get(document, p), dict)]))
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(_get(document, path))))
        _parse_or_clear_error(_with(document, path, key, data.draw(yamlish(model))), model)
    elif set(_get(document, path)) <= set(_keys(model)):  # a config object, not a free mapping (site_configs)
        key = "zz_" + data.draw(st.from_regex(r"[a-z_]{1,8}", fullmatch=True))
        err = _parse_or_clear_error(_with(document, path, key, data.draw(scalars)), model)
        assert isinstance(err, ConfigError)
        assert f"{SOURCE}: {_key_path_text(path, key)}: unknown key" in str(err), str(err)


def _get(document, path):
    for part in path:
        document = document[part]
    return document


def _key_path_text(path: tuple, key: str) -> str:
    parts = ""
    for item in (*path, key):
        parts += f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item)
    return parts


@EXAMPLES
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        st.builds(yaml.safe_dump, yamlish(SiteConfig)).map(str.encode),
    )
)
def test_any_file_content_gives_a_site_config_or_a_config_error(tmp_path, raw):
    path = tmp_path / "site.yaml"
    path.write_bytes(raw)
    try:
        load_config(path, SiteConfig)
    except ConfigError as err:
        _assert_names_the_file(err, str(path))


def test_regression_non_utf8_and_deeply_nested_yaml_are_config_errors(tmp_path):
    """Found by the tests above: a Latin-1 file raised UnicodeDecodeError, deep nesting RecursionError."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: Hôpital\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin\.yaml: not UTF-8 text"):
        read_yaml(latin)
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 5000)
    with pytest.raises(ConfigError, match=r"deep\.yaml: not valid YAML: nested too deeply"):
        read_yaml(deep)


# ---------------------------------------------------------------------------- clinical CSV reader
cells = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "NA",
            "n/a",
            "nan",
            "NaN",
            "null",
            "inf",
            "-inf",
            "1e400",
            "0",
            "1",
            "-1",
            "2",
            "yes",
            "TRUE",
            "Male",
            " female ",
            "deep",
            "G4",
            "1.5",
            "-0",
            "0x10",
            "1_000",
            "١٢",
            "\u00a0",
            '"',
            ",",
            "\n",
        ]
    ),
    st.text(max_size=10),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"]


@st.composite
def clinical_files(draw) -> bytes:
    """A clinical.csv: the schema's columns (some dropped, some duplicated, extras, any order),
    rows that are good, edited or of the wrong length, written as CSV or as raw text, in any encoding."""
    columns = [c for c in COLUMNS if draw(st.integers(0, 9)) > 0]
    columns += draw(st.lists(st.one_of(st.sampled_from(COLUMNS), st.text(max_size=6)), max_size=3))
    columns = draw(st.permutations(columns))
    rows = []
    for i in range(draw(st.integers(0, 6))):
        good = clinical_row(draw(st.sampled_from([f"p{i}", "p0", "", " p1 "])), i)
        row = [good.get(c, "") for c in columns]
        for j in draw(st.lists(st.integers(0, max(len(row) - 1, 0)), max_size=4)):
            if row:
                row[j] = draw(cells)
        row += draw(st.lists(cells, max_size=2)) if draw(st.integers(0, 5)) == 0 else []
        rows.append(row[: draw(st.integers(0, len(row)))] if draw(st.integers(0, 5)) == 0 else row)
    if draw(st.integers(0, 7)) == 0:
        text = draw(st.text(max_size=300))
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
        writer.writerow(columns)
        writer.writerows(rows)
        text = buffer.getvalue()
    return text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")


def _check_table(table, path: Path, problems: list) -> None:
    """Every kept record is valid against the schema; every other row has an error naming its line."""
    for record in table.records.values():
        assert record.pid and record.pid == record.pid.strip()
        for var in SCHEMA.variables:
            value = record.values[var.name]
            if value is None:
                continue
            if var.kind == "categorical":
                assert value in var.categories
            elif var.kind == "binary":
                assert value in (0.0, 1.0)
            else:
                assert math.isfinite(value)
        for time, happened, seen in zip(record.time, record.event, record.observed):
            assert (time > 0 and math.isfinite(time) and happened in (0.0, 1.0)) if seen else happened == 0.0
    kept = {record.line for record in table.records.values()}
    bad = {int(m.group(1)) for p in problems if p.file and (m := re.fullmatch(rf"{re.escape(str(path))}:(\d+)", p.file))}
    for p in problems:
        assert p.file and p.file.startswith(str(path)) and p.reason
    assert kept.isdisjoint(bad) and kept | bad == set(range(2, table.n_rows + 2)), "each row: kept, or an error naming its line"


@pytest.mark.parametrize("policy", ["skip", "fail"])
@EXAMPLES
@given(raw=clinical_files())
def test_any_clinical_csv_gives_a_table_or_a_clear_error(tmp_path, policy, raw):
    path = tmp_path / "clinical.csv"
    path.write_bytes(raw)
    log = ProblemLog(policy)
    try:
        table = read_clinical_csv(path, SCHEMA, log)
    except SiteUnusableError as err:
        assert err.problems and all(p.file == str(path) for p in err.problems), str(err)
        event("site unusable")
        return
    except BadPatientError as err:
        assert policy == "fail" and err.problem.file.startswith(f"{path}:") and err.problem.column, str(err)
        event("bad patient (policy fail)")
        return
    _check_table(table, path, log.problems)
    event("table with patients" if table.records else "table without usable patients")


def test_regression_a_first_row_longer_than_the_header_is_a_clear_error(tmp_path):
    """Found by the test above: pandas took the extra cells as an index and the reader crashed (TypeError)."""
    path = tmp_path / "clinical.csv"
    good = clinical_row("p0", 0)
    path.write_text(",".join(COLUMNS) + "\n" + ",".join(good[c] for c in COLUMNS) + ",extra\n")
    with pytest.raises(SiteUnusableError, match="line 2 has more cells than the header") as err:
        read_clinical_csv(path, SCHEMA, ProblemLog())
    assert err.value.problems[0].file == str(path)
