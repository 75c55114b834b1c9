"""First-order MRI radiomics (stsfl.common.radiomics) and the schema's `source: mri` variables."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import skew

from stsfl.client.data.clinical_table import read_clinical_csv, required_columns
from stsfl.client.problems import ProblemLog
from stsfl.common.config import ClinicalSchema, load_schema
from stsfl.common.radiomics import RADIOMICS_FEATURES, first_order_radiomics


def test_features_match_numpy_and_scipy_on_a_crop():
    rng = np.random.default_rng(0)
    t1 = rng.normal(size=(6, 7, 8))
    t2 = 0.6 * t1 + rng.gamma(2.0, size=t1.shape)  # skewed, correlated with T1
    features = first_order_radiomics(np.stack([t1, t2]).astype(np.float32))
    assert set(features) == set(RADIOMICS_FEATURES)
    for name, channel in (("t1", t1), ("t2", t2)):
        values = channel.astype(np.float32).ravel().astype(np.float64)
        assert features[f"mri_{name}_p10"] == pytest.approx(np.percentile(values, 10))
        assert features[f"mri_{name}_p90"] == pytest.approx(np.percentile(values, 90))
        assert features[f"mri_{name}_skewness"] == pytest.approx(skew(values), rel=1e-6)
    assert features["mri_t2_skewness"] > 0.5  # the gamma part
    expected = np.corrcoef(t1.astype(np.float32).ravel(), t2.astype(np.float32).ravel())[0, 1]
    assert features["mri_t1_t2_correlation"] == pytest.approx(expected, rel=1e-6)


def test_a_constant_channel_gives_zero_skewness_and_correlation():
    volume = np.stack([np.zeros((4, 4, 4)), np.random.default_rng(1).normal(size=(4, 4, 4))]).astype(np.float32)
    features = first_order_radiomics(volume)
    assert features["mri_t1_skewness"] == 0.0 and features["mri_t1_t2_correlation"] == 0.0
    with pytest.raises(ValueError, match=r"\[2, D, H, W\]"):
        first_order_radiomics(volume[:1])


def _schema(variables: list[dict]) -> ClinicalSchema:
    return ClinicalSchema.model_validate(
        {
            "variables": variables,
            "endpoints": [{"name": "os", "label": "overall survival", "time_column": "os_time", "event_column": "os_event"}],
        }
    )


def test_an_mri_variable_must_be_a_continuous_radiomics_feature():
    with pytest.raises(ValueError, match="mri_t1_p10"):
        _schema([{"name": "oedema", "kind": "continuous", "source": "mri"}])
    with pytest.raises(ValueError, match="continuous"):
        _schema([{"name": "mri_t2_p90", "kind": "binary", "source": "mri"}])
    schema = _schema([{"name": "age", "kind": "continuous"}, {"name": "mri_t2_p90", "kind": "continuous", "source": "mri"}])
    assert [v.name for v in schema.table_variables] == ["age"] and [v.name for v in schema.mri_variables] == ["mri_t2_p90"]


def test_fingerprint_of_a_table_column_is_unchanged_and_an_mri_variable_differs():
    plain = _schema([{"name": "age", "kind": "continuous"}]).fingerprint()
    explicit = _schema([{"name": "age", "kind": "continuous", "source": "table"}]).fingerprint()
    assert plain == explicit
    table = _schema([{"name": "mri_t2_p90", "kind": "continuous"}]).fingerprint()
    derived = _schema([{"name": "mri_t2_p90", "kind": "continuous", "source": "mri"}]).fingerprint()
    assert table["mri_t2_p90"] != derived["mri_t2_p90"]


def test_clinical_csv_needs_no_radiomics_column(tmp_path):
    schema = load_schema()
    assert not {v.name for v in schema.mri_variables} & set(required_columns(schema))
    header = required_columns(schema)
    row = {
        "patient_id": "p1", "age": "60", "sex": "male", "tumour_size": "5", "tumour_volume": "40", "depth": "deep",
        "grade": "3", "histology": "ups", "location": "axial", "neoadjuvant_chemo": "0",
        "metastasis_at_presentation": "0", "radiotherapy": "none", "os_time": "100", "os_event": "1",
        "dm_time": "100", "dm_event": "0", "lr_time": "100", "lr_event": "0",
    }  # fmt: skip
    path = tmp_path / "clinical.csv"
    path.write_text(",".join(header) + "\n" + ",".join(row[c] for c in header) + "\n")
    problems = ProblemLog("fail")
    table = read_clinical_csv(path, schema, problems)
    assert not problems.problems
    values = table.records["p1"].values
    assert values["age"] == 60.0 and all(values[v.name] is None for v in schema.mri_variables)
