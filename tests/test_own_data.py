"""A hospital's own columns: the schema draft, the schema fingerprint the statistics phase compares,
relative `schema_file` paths, and sites that cannot serve a run named with their cause."""

from __future__ import annotations

import csv
import time

import pytest
import yaml
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 - fixture
from site_builder import COLUMNS, make_site

from stsfl.client.data.schema_draft import draft_schema, render_draft
from stsfl.client.lab.cli import main as stsfl_main
from stsfl.common.config import ClinicalSchema, ConfigError, FederationConfig, SiteConfig, load_config, load_schema
from stsfl.common.config.loader import bundled_path
from stsfl.common.config.schema import schema_differences
from stsfl.common.config.security import absolute_security_paths
from stsfl.server.federation.sites import MissingSitesError

ROWS = [
    {"pid": "a1", "age": "54.2", "sex": "female", "grade": "2", "chemo": "yes", "notes": "x1", "os_time": "300", "os_event": "1"},
    {"pid": "a2", "age": "NA", "sex": "Male", "grade": "3", "chemo": "no", "notes": "x2", "os_time": "1200", "os_event": "0"},
    {"pid": "a3", "age": "61", "sex": "male", "grade": "1", "chemo": "no", "notes": "x3", "os_time": "800", "os_event": "1"},
]


def _write_rows(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_schema_draft_guesses_every_column_and_marks_each_guess(tmp_path):
    draft = draft_schema(_write_rows(tmp_path / "clinical.csv", ROWS), max_categories=2)
    schema = ClinicalSchema.model_validate(draft.data)
    assert schema.patient_id_column == "pid"
    assert {v.name: v.kind for v in schema.table_variables} == {
        "age": "continuous",
        "sex": "categorical",
        "grade": "continuous",
        "chemo": "binary",
    }
    # the radiomics every site computes from its MRI crops follow, as the bundled schema has them
    assert [v.name for v in schema.mri_variables] == [v.name for v in load_schema().mri_variables]
    assert [c.lower() for c in schema.variable("sex").categories] == ["female", "male"]  # one category per spelling
    assert [(e.name, e.time_column, e.event_column) for e in schema.endpoints] == [("os", "os_time", "os_event")]
    assert "notes" in draft.left_out and "3 different values" in draft.left_out["notes"]
    assert "categorical with categories ['1', '2', '3']" in draft.notes["grade"]  # small whole numbers: codes?

    text = render_draft(draft, tmp_path / "clinical.csv")
    reviews = [line for line in text.splitlines() if line.lstrip().startswith("# REVIEW:")]
    assert len(reviews) == 1 + len(schema.variables) + len(schema.endpoints) + len(draft.left_out)
    assert ClinicalSchema.model_validate(yaml.safe_load(text)) == schema  # the comments do not change the schema


def test_schema_draft_of_the_bundled_columns_loads_and_matches_their_kinds(tmp_path):
    rows = [
        dict(zip(COLUMNS, values))
        for values in (
            ["p0", "40", "female", "3", "50", "deep", "2", "ups", "axial", "0", "0", "none", "100", "1", "90", "0"],
            [
                "p1",
                "70",
                "male",
                "8",
                "300",
                "superficial",
                "3",
                "mpnst",
                "axial",
                "1",
                "0",
                "preoperative",
                "400",
                "0",
                "380",
                "1",
            ],
        )
    ]
    draft = draft_schema(_write_rows(tmp_path / "clinical.csv", rows))
    kinds = {v["name"]: v["kind"] for v in draft.data["variables"]}
    assert kinds["age"] == "continuous" and kinds["neoadjuvant_chemo"] == "binary" and kinds["histology"] == "categorical"
    assert [e["name"] for e in draft.data["endpoints"]] == ["os", "dm"]


def test_schema_draft_command_writes_beside_the_csv_and_never_overwrites(tmp_path, capsys):
    csv_path = _write_rows(tmp_path / "clinical.csv", ROWS)
    with pytest.raises(SystemExit) as done:
        stsfl_main(["schema", "draft", str(csv_path)])
    assert done.value.code == 0
    load_schema(tmp_path / "schema.draft.yaml")
    with pytest.raises(SystemExit) as again:
        stsfl_main(["schema", "draft", str(csv_path)])
    assert again.value.code == 2 and "schema.draft.yaml exists" in capsys.readouterr().err


def _changed_schema(path):
    """The bundled schema with grade 4 added and one more variable: differs in two columns."""
    data = yaml.safe_load(bundled_path("schema.yaml").read_text())
    for var in data["variables"]:
        if var["name"] == "grade":
            var["categories"] = ["1", "2", "3", "4"]
            var["description"] = "descriptions do not count"
    data["variables"].append({"name": "ki67", "kind": "continuous"})
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_fingerprint_differences_name_the_columns(tmp_path):
    coordinator = load_schema().fingerprint()
    site = load_schema(_changed_schema(tmp_path / "schema.yaml")).fingerprint()
    assert schema_differences(site, coordinator) == ["grade (defined differently)", "ki67 (only at the site)"]
    assert schema_differences(coordinator, site) == ["grade (defined differently)", "ki67 (missing at the site)"]
    assert schema_differences(coordinator, coordinator) == []


def test_a_relative_schema_file_is_relative_to_its_yaml_whatever_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    _changed_schema(tmp_path / "conf" / "schema.yaml")
    config = tmp_path / "conf" / "federation.yaml"
    config.write_text("sites: [a, b]\nschema_file: schema.yaml\n")
    monkeypatch.chdir(tmp_path)  # elsewhere than the YAML, as the simulation engine's processes are
    fed = load_config("conf/federation.yaml", FederationConfig)
    assert fed.schema_file == (tmp_path / "conf" / "schema.yaml").resolve()
    # copies written elsewhere (results folder, LOCO folds) keep pointing at the same file
    copy = absolute_security_paths(yaml.safe_load(config.read_text()), config)
    assert copy["schema_file"] == str((tmp_path / "conf" / "schema.yaml").resolve())


def test_a_missing_schema_file_names_the_yaml_the_key_and_the_path_tried(tmp_path):
    site_yaml = tmp_path / "site.yaml"
    site_yaml.write_text("name: a\nroot: .\nschema_file: shared/schema.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(site_yaml, SiteConfig)
    assert str(err.value).startswith(f"{site_yaml}: schema_file: {tmp_path / 'shared' / 'schema.yaml'} is not a readable file")


def _site(tmp_path_factory, name: str, edit=None):
    site_yaml = make_site(tmp_path_factory.mktemp(name), n=2, slides=False)
    data = {**yaml.safe_load(site_yaml.read_text()), "name": name}
    site_yaml.write_text(yaml.safe_dump(edit(site_yaml, data) if edit else data))
    return site_yaml


def test_sites_that_cannot_serve_are_named_with_their_cause_without_waiting(tmp_path, tmp_path_factory, server_identity):
    def own_schema(site_yaml, data):
        _changed_schema(site_yaml.parent / "schema.yaml")
        return {**data, "schema_file": "schema.yaml"}

    def no_grade(site_yaml, data):
        rows = list(csv.DictReader(open(site_yaml.parent / "clinical.csv")))
        _write_rows(site_yaml.parent / "clinical.csv", [{k: v for k, v in r.items() if k != "grade"} for r in rows])
        return data

    sites = {
        "good": _site(tmp_path_factory, "good"),
        "other_schema": _site(tmp_path_factory, "other_schema", own_schema),
        "no_grade": _site(tmp_path_factory, "no_grade", no_grade),
    }
    config = tmp_path / "federation.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sites": list(sites),
                "holdout": ["no_grade"],
                "rounds": 1,
                "wait_for_sites_s": 300,
                "cross_site": {"enabled": False},
            }
        )
    )
    started = time.monotonic()
    with pytest.raises(MissingSitesError) as err:
        run_in_process(InProcessGrid(sites), config, tmp_path / "results")
    lines = str(err.value).splitlines()
    assert time.monotonic() - started < 120  # refused once every site answered, not after wait_for_sites_s
    assert lines[0].startswith("site other_schema cannot serve this run: its clinical schema")
    assert lines[0].endswith("in: grade (defined differently), ki67 (only at the site)")
    assert lines[1].startswith("site no_grade cannot serve this run: SiteUnusableError: site cannot be used:")
    assert "column grade" in lines[1] and len(lines) == 2  # one line per site; nobody "has not connected"
