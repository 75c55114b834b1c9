"""Clinical table: schema checks name file / patient / column; encoding layout, missing rule and
federated statistics equal to the pooled ones."""

from __future__ import annotations

import numpy as np
import pytest
from site_builder import COLUMNS, clinical_row, write_csv

from stsfl.client.data.clinical_encoding import apply_global_stats, site_clinical_sums
from stsfl.client.data.clinical_table import read_clinical_csv
from stsfl.client.problems import BadPatientError, ProblemLog, SiteUnusableError
from stsfl.common.clinical_features import clinical_dim, clinical_feature_names
from stsfl.common.clinical_stats import ClinicalSums, combine_clinical_sums
from stsfl.common.config import load_schema

SCHEMA = load_schema()


def read(tmp_path, rows, columns=COLUMNS, policy="skip"):
    path = tmp_path / "clinical.csv"
    write_csv(path, rows, columns)
    problems = ProblemLog(policy)
    return read_clinical_csv(path, SCHEMA, problems), problems.problems, path


def test_good_table_reads_every_row(tmp_path):
    table, problems, _ = read(tmp_path, [clinical_row(f"p{i}", i) for i in range(4)])
    assert sorted(table.records) == ["p0", "p1", "p2", "p3"] and problems == []
    rec = table.records["p1"]
    assert rec.values["sex"] == "male" and rec.values["neoadjuvant_chemo"] == 1.0
    assert rec.time == [250.0, 190.0, 150.0] and rec.event == [0.0, 1.0, 1.0] and rec.observed == [True, True, True]


def test_missing_required_column_names_the_column(tmp_path):
    with pytest.raises(SiteUnusableError) as err:
        read(tmp_path, [clinical_row("p0", 0)], [c for c in COLUMNS if c != "grade"])
    (problem,) = err.value.problems
    assert problem.column == "grade" and problem.file.endswith("clinical.csv")
    assert "required column missing" in str(err.value)


def test_duplicate_patient_id_excludes_both_rows(tmp_path):
    table, problems, path = read(tmp_path, [clinical_row("p0", 0), clinical_row("p0", 1), clinical_row("p2", 2)])
    assert list(table.records) == ["p2"]
    assert [(p.file, p.patient, p.column) for p in problems] == [
        (f"{path}:2", "p0", "patient_id"),
        (f"{path}:3", "p0", "patient_id"),
    ]
    assert all("duplicate patient id" in p.reason for p in problems)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("os_time", "abc", "'abc' is not a number"),
        ("os_time", "-5", "must be positive"),
        ("dm_time", "0", "must be positive"),
        ("os_event", "2", "is not 0 or 1"),
        ("dm_event", "yes", "is not 0 or 1"),
        ("histology", "angiosarcomma", "category 'angiosarcomma' is not in the schema"),
        ("age", "old", "is not a number"),
        ("age", "140", "outside the schema range"),
        ("neoadjuvant_chemo", "maybe", "is not a binary value"),
        ("os_event", "", "event is missing while the endpoint's other column is given"),
    ],
)
def test_bad_cell_excludes_the_patient_and_names_column(tmp_path, column, value, reason):
    bad = clinical_row("p1", 1) | {column: value}
    table, problems, path = read(tmp_path, [clinical_row("p0", 0), bad])
    assert list(table.records) == ["p0"]
    (problem,) = problems
    assert (problem.file, problem.patient, problem.column) == (f"{path}:3", "p1", column)
    assert reason in problem.reason


def test_fail_policy_stops_at_first_bad_row(tmp_path):
    with pytest.raises(BadPatientError, match=r"patient p1, column os_event"):
        read(tmp_path, [clinical_row("p0", 0), clinical_row("p1", 1) | {"os_event": "2"}], policy="fail")


def test_missing_cells_are_data_and_categories_ignore_case(tmp_path):
    row = clinical_row("p0", 0) | {"age": "", "sex": "NA", "dm_time": "", "dm_event": "", "depth": " Deep "}
    table, problems, _ = read(tmp_path, [row])
    rec = table.records["p0"]
    assert problems == []
    assert rec.values["age"] is None and rec.values["sex"] is None and rec.values["depth"] == "deep"
    assert rec.observed == [True, False, True]


def test_feature_layout_is_fixed_by_schema():
    names = clinical_feature_names(SCHEMA)
    # 4 numeric x2 + 2 binary x2 + categories + indicators, then 7 MRI radiomics x2
    assert clinical_dim(SCHEMA) == len(names) == 37 + 14
    assert names[37:39] == ["mri_t1_p10", "mri_t1_p10__missing"]
    assert names[:5] == ["age", "age__missing", "sex=female", "sex=male", "sex__missing"]
    assert "histology=mpnst" in names and "radiotherapy__missing" in names


def test_encoding_with_missing_values_follows_the_rule(tmp_path):
    rows = [clinical_row(f"p{i}", i) for i in range(3)]
    rows[0] |= {"age": "", "sex": "", "neoadjuvant_chemo": ""}
    table, _, _ = read(tmp_path, rows)
    records = list(table.records.values())
    stats = combine_clinical_sums([site_clinical_sums(records, SCHEMA)], SCHEMA)
    x = apply_global_stats(records, stats, SCHEMA)
    col = {n: i for i, n in enumerate(clinical_feature_names(SCHEMA))}
    assert x.shape == (3, 51) and x.dtype == np.float32
    assert x[0, col["age"]] == 0.0 and x[0, col["age__missing"]] == 1.0
    assert x[0, col["sex=female"]] == x[0, col["sex=male"]] == 0.0 and x[0, col["sex__missing"]] == 1.0
    assert x[0, col["neoadjuvant_chemo"]] == pytest.approx(stats.mean["neoadjuvant_chemo"])  # imputed prevalence
    ages = np.array([float(rows[1]["age"]), float(rows[2]["age"])])
    assert x[1:, col["age"]] == pytest.approx((ages - ages.mean()) / ages.std(), abs=1e-5)
    assert x[1, col["sex=male"]] == 1.0 and x[1, col["age__missing"]] == 0.0


def test_federated_statistics_equal_pooled_statistics(tmp_path):
    rows = [clinical_row(f"p{i}", i) for i in range(9)]
    tables = []
    for site, chunk in enumerate((rows[:2], rows[2:7], rows[7:])):
        (tmp_path / str(site)).mkdir()
        tables.append(read(tmp_path / str(site), chunk)[0])
    sums = [site_clinical_sums(t.records.values(), SCHEMA) for t in tables]
    # what travels is plain JSON-able aggregates
    sums = [ClinicalSums.from_dict(s.to_dict()) for s in sums]
    stats = combine_clinical_sums(sums, SCHEMA)
    ages = np.array([float(r["age"]) for r in rows])
    assert stats.mean["age"] == pytest.approx(ages.mean()) and stats.std["age"] == pytest.approx(ages.std())
    assert stats.n_patients == 9
    assert stats.category_freq["sex"]["male"] == pytest.approx(4 / 9)
