"""Config loading: bundled configs are valid; typos, wrong types and missing values are named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stsfl.common.config import (
    ClinicalSchema,
    ConfigError,
    FederationConfig,
    ModelPreset,
    SiteConfig,
    load_config,
    load_preset,
    load_schema,
)
from stsfl.common.config.schema import schema_differences
from stsfl.common.radiomics import RADIOMICS_FEATURES


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bundled_schema_has_the_eleven_mmnn_variables_the_mri_radiomics_and_three_endpoints():
    schema = load_schema()
    assert len(schema.table_variables) == 11
    assert [v.name for v in schema.mri_variables] == list(RADIOMICS_FEATURES)
    assert schema.endpoint_names == ["os", "dm", "lr"]
    # death competes with distant metastasis and local recurrence, nothing competes with death
    assert [schema.competing_of(e) for e in schema.endpoint_names] == [None, "os", "os"]
    assert sorted(v.name for v in schema.variables if v.sarculator) == ["age", "grade", "histology", "tumour_size"]


@pytest.mark.parametrize("name", ["paper", "cpu-small"])
def test_bundled_presets_load(name):
    preset = load_preset(name)
    assert preset.name == name
    assert isinstance(preset, ModelPreset)


def test_paper_preset_is_densenet121_with_12_features():
    preset = load_preset("paper")
    assert preset.mri.block_config == (6, 12, 24, 16)
    assert preset.mri.out_features == 12 and preset.clinical.out_features == 12


@pytest.mark.parametrize("name", ["federation.yaml", "site.example.yaml"])
def test_bundled_example_configs_load(repo_root, name):
    model = FederationConfig if name.startswith("federation") else SiteConfig
    load_config(repo_root / "configs" / name, model)


def test_typo_in_key_is_rejected_with_file_and_key_path(tmp_path):
    path = write(tmp_path, "sites: [a, b]\nroundz: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, FederationConfig)
    message = str(err.value)
    assert str(path) in message
    assert "roundz: unknown key" in message


def test_nested_typo_names_the_full_key_path(tmp_path):
    path = write(tmp_path, "name: p\nmri:\n  growth_rat: 4\n")
    with pytest.raises(ConfigError, match=r"mri\.growth_rat: unknown key"):
        load_config(path, ModelPreset)


def test_wrong_type_names_key_and_expectation(tmp_path):
    path = write(tmp_path, "sites: [a]\nrounds: ten\n")
    with pytest.raises(ConfigError, match=r"rounds: expected a valid integer.*got 'ten'"):
        load_config(path, FederationConfig)


def test_l2_penalty_is_validated_and_only_for_linear_cox(tmp_path):
    assert load_config(write(tmp_path, "sites: [a]\ntask: linear-cox\nl2_penalty: 0.3\n"), FederationConfig).l2_penalty == 0.3
    with pytest.raises(ConfigError, match=r"l2_penalty: .*greater than or equal to 0"):
        load_config(write(tmp_path, "sites: [a]\ntask: linear-cox\nl2_penalty: -1\n"), FederationConfig)
    with pytest.raises(ConfigError, match=r"l2_penalty applies to task linear-cox only"):
        load_config(write(tmp_path, "sites: [a]\nl2_penalty: 0.3\n"), FederationConfig)


def test_missing_required_value_is_named(tmp_path):
    path = write(tmp_path, "rounds: 2\n")
    with pytest.raises(ConfigError, match=r"sites: required value is missing"):
        load_config(path, FederationConfig)


def test_categorical_without_categories_names_the_list_index(tmp_path):
    path = write(tmp_path, "variables:\n  - name: grade\n    kind: categorical\nendpoints: []\n")
    with pytest.raises(ConfigError, match=r"variables\[0\]: a categorical variable needs `categories`"):
        load_config(path, ClinicalSchema)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "sites: [a,\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line 2"):
        load_config(path, FederationConfig)


def test_cli_reports_config_error_without_traceback(tmp_path):
    path = write(tmp_path, "sites: [a]\nstrategy: fedsgd\n")
    proc = subprocess.run(
        [sys.executable, "-m", "stsfl.server.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}: strategy: expected 'fedavg'" in proc.stderr


@pytest.mark.parametrize(
    "competing, message",
    [(["pfs"], "must name other endpoints"), (["dm"], "must name other endpoints"), (["os", "os"], "one competing")],
)
def test_a_competing_endpoint_must_be_another_endpoint_of_the_schema(competing, message):
    data = load_schema().model_dump(mode="json")
    data["endpoints"][1]["competing"] = competing
    with pytest.raises(ValueError, match=message):
        ClinicalSchema.model_validate(data)


def test_declaring_a_competing_event_changes_the_schema_fingerprint_of_that_endpoint_only():
    schema = load_schema()
    data = schema.model_dump(mode="json")
    data["endpoints"][1]["competing"] = []
    other = ClinicalSchema.model_validate(data)
    assert schema_differences(schema.fingerprint(), other.fingerprint()) == ["dm_event (defined differently)"]
