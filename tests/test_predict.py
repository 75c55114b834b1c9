"""`sts-client predict` on real tiny site files: a model file exported with its baseline hazard,
pages and CSV for a site patient, a new patient without outcomes whose slide is corrupt, and the
model file's schema and format checks."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from site_builder import COLUMNS, clinical_row, make_site, write_csv

from stsfl.client.cli import main as client_main
from stsfl.client.data.site_prepare import prepare_site
from stsfl.client.prediction.model_export import export_local_model
from stsfl.client.prediction.predict import predict_patients
from stsfl.common.clinical_features import clinical_dim
from stsfl.common.clinical_stats import combine_clinical_sums
from stsfl.common.config import SiteConfig, load_config, load_preset, load_schema, without_n4
from stsfl.common.console import UserError
from stsfl.common.model_file import ModelFileError, load_model_file
from stsfl.tasks.multimodal.model import MultimodalCoxNet

# N4 off: the tests are about prediction, and N4 is most of the tiny sites' preprocessing time.
PRESET = without_n4(load_preset("cpu-small"))


def followed(i: int) -> dict[str, str]:
    """Patient i's outcomes: os and dm over 7 years; p2 and p4 die without metastasis (dm censored on
    the day of death: the competing event), local recurrence of p0 and p2 before 1 and 5 years."""
    os_time, dm_time = 100 + 600 * i, 80 + 500 * i
    return {
        "os_time": str(os_time),
        "dm_time": str(os_time if i in (2, 4) else dm_time),
        "lr_time": str(dm_time),
        "lr_event": str(int(i in (0, 2))),
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    # 8 patients: the baseline phase leaves out bins with fewer than 5 at risk, and the events
    # between 1 and 5 years must fall in bins that still count
    site_yaml = make_site(root / "site", n=8)
    # follow-up over 7 years, events before 1 year and between 1 and 5 years
    write_csv(
        root / "site" / "clinical.csv",
        [clinical_row(f"p{i}", i) | followed(i) for i in range(8)],
    )
    schema = load_schema()
    prepared = prepare_site(load_config(site_yaml, SiteConfig), site_yaml, PRESET, schema=schema, progress=False)
    stats = combine_clinical_sums([prepared.clinical_sums()], schema)
    torch.manual_seed(0)
    net = MultimodalCoxNet(PRESET, clinical_dim(schema), len(schema.endpoints)).eval()
    model_path = root / "model.stsfl.zip"
    export_local_model(model_path, net, PRESET, schema, stats, {"test_site": (prepared, None)})
    return root, site_yaml, model_path


def test_site_patient_gets_a_page_with_its_risks_and_a_csv(exported):
    root, site_yaml, model_path = exported
    [p] = predict_patients(model_path, site_yaml, root / "out_site", pids=["p0"])
    page = (root / "out_site" / "p0.html").read_text()
    assert p.used == ["mri", "wsi", "clinical"] and not p.missing
    for ep in p.endpoints:
        assert 0 <= ep.absolute.risk[0, 0] < ep.absolute.risk[0, 2] < 1  # 1-year risk below 5-year risk
        for i in range(3):
            assert f"{100 * ep.absolute.risk[0, i]:.1f}%" in page
    assert page.count("data:image/png;base64,") == 3  # survival curves, Grad-CAM, attended tiles
    rows = list(csv.DictReader(open(root / "out_site" / "predictions.csv")))
    assert rows[0]["patient_id"] == "p0" and abs(float(rows[0]["os_risk_3y"]) - p.endpoints[0].absolute.risk[0, 1]) < 1e-4
    # dm and lr compete with death: crude cumulative incidence first, 1 - S beside it under its own name
    os_, dm, lr = p.endpoints
    assert os_.incidence is None and dm.incidence is not None and lr.incidence is not None
    assert np.all(dm.incidence.risk <= dm.absolute.risk + 1e-12) and dm.incidence.risk[0, 2] < dm.absolute.risk[0, 2] - 1e-4
    assert "dm_cif_5y" in rows[0] and abs(float(rows[0]["dm_cif_5y"]) - dm.incidence.risk[0, 2]) < 1e-4
    assert "os_cif_5y" not in rows[0]
    assert "crude cumulative incidence (competing event: overall survival)" in page and "world without the competing" in page
    assert f"{100 * dm.incidence.risk[0, 2]:.1f}%" in page


def test_new_patient_with_a_corrupt_slide_is_predicted_without_it(exported):
    root, site_yaml, model_path = exported
    new = root / "new"
    no_outcomes = [c for c in COLUMNS if not c.endswith(("_time", "_event"))]
    new.mkdir()
    write_csv(new / "clinical.csv", [clinical_row("n1", 1), clinical_row("n2", 1) | {"patient_id": "n2"}], no_outcomes)
    for pid in ("n1", "n2"):
        shutil.copytree(root / "site" / "mri" / "p1", new / "mri" / pid)
    (new / "wsi").mkdir()
    (new / "wsi" / "n1.tiff").write_bytes(b"this is not a slide" * 100)  # n2 simply has no slide
    n1, n2 = predict_patients(model_path, site_yaml, root / "out_new", patients_dir=new)
    assert n1.used == ["mri", "clinical"] and n1.missing[0].startswith("wsi:") and "unusable" in n1.missing[0]
    assert any("n1.tiff" in w for w in n1.warnings)
    assert n2.missing == ["wsi: not available"]
    assert [e.log_risk for e in n1.endpoints] == pytest.approx([e.log_risk for e in n2.endpoints])
    page = (root / "out_new" / "n1.html").read_text()
    assert "Prediction without" in page and "n1.tiff" in page and "no slide used" in page
    assert f"{100 * n1.endpoints[1].absolute.risk[0, 2]:.1f}%" in page


def test_model_file_refuses_another_schema_and_a_corrupt_file(exported, tmp_path):
    _, _, model_path = exported
    schema = load_schema()
    other = schema.model_copy(update={"variables": [v for v in schema.variables if v.name != "depth"]})
    with pytest.raises(ModelFileError, match="(?s)different clinical schema.*'depth'"):
        load_model_file(model_path, schema=other)
    assert load_model_file(model_path, schema=schema).horizons_years == [1.0, 3.0, 5.0]
    broken = tmp_path / "broken.zip"
    broken.write_bytes(model_path.read_bytes()[:500])
    with pytest.raises(ModelFileError, match="not a readable stsfl model file"):
        load_model_file(broken)


def test_cli_names_an_unknown_patient(exported, capsys):
    root, site_yaml, model_path = exported
    with pytest.raises(SystemExit) as done:
        client_main(
            ["predict", "--site", str(site_yaml), "--model", str(model_path), "--patient", "nobody", "--out", str(root / "cli")]
        )
    assert done.value.code == 2
    assert "patient nobody cannot be predicted" in capsys.readouterr().err


def test_cli_recalibrates_at_the_site_and_predict_uses_it(exported, capsys):
    import json

    root, site_yaml, model_path = exported
    out = root / "recal"
    with pytest.raises(SystemExit) as done:
        client_main(["recalibrate", "--site", str(site_yaml), "--model", str(model_path), "--out", str(out), "--folds", "2"])
    assert done.value.code == 0, capsys.readouterr().err
    document = json.loads((out / "recalibration.json").read_text())
    assert set(document["endpoints"]) == {"os", "dm", "lr"} and document["endpoints"]["dm"]["competing"]["cause"] == "os"
    # 8 patients: too few events to judge calibration, which the report says instead of numbers
    assert "events before the horizon" in document["endpoints"]["os"]["calibration"]["365.25"]["skipped"]
    assert "Recalibration at test_site" in (out / "recalibration.html").read_text()
    assert "recalibration.json and recalibration.html written" in capsys.readouterr().err
    [pooled] = predict_patients(model_path, site_yaml, root / "out_pooled", pids=["p3"])
    [own] = predict_patients(model_path, site_yaml, root / "out_recal", pids=["p3"], recalibration=out / "recalibration.json")
    assert own.endpoints[1].log_risk == pooled.endpoints[1].log_risk  # the same network
    assert not np.allclose(own.endpoints[1].incidence.risk, pooled.endpoints[1].incidence.risk)
    document["grid"]["bin_days"] = 7
    (out / "weekly.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="another time grid"):
        predict_patients(model_path, site_yaml, root / "out_bad", pids=["p3"], recalibration=out / "weekly.json")


def test_server_export_of_a_results_folder_gives_the_same_model(exported, tmp_path):
    """`sts-server export`: federation.yaml + statistics.json + baseline_hazard.json + model_selected.npz."""
    import json

    import numpy as np
    import yaml

    from stsfl.server.export_model import export_from_results

    _, _, model_path = exported
    local = load_model_file(model_path)
    results = tmp_path / "results"
    results.mkdir()
    (results / "federation.yaml").write_text(yaml.safe_dump({"sites": ["test_site", "other"], "holdout": ["other"]}))
    (results / "statistics.json").write_text(json.dumps({"global": local.statistics}))
    (results / "baseline_hazard.json").write_text(json.dumps(local.baseline))
    np.savez(results / "model_selected.npz", **local.arrays)
    out = export_from_results(results, tmp_path / "fed.stsfl.zip")
    model = load_model_file(out, schema=load_schema())
    assert model.source["holdout_sites"] == ["other"] and model.encoder_fingerprint == local.encoder_fingerprint
    assert model.preset == load_preset("cpu-small") and all(np.array_equal(model.arrays[k], v) for k, v in local.arrays.items())
    hazard, _ = model.baseline_hazard("os")
    np.testing.assert_array_equal(hazard.cumulative, local.baseline_hazard("os")[0].cumulative)
    with pytest.raises(ModelFileError, match="export with --site-baselines"):
        model.baseline_hazard("os", site="test_site")  # sites' own counts stay out unless asked for
    with_sites = load_model_file(export_from_results(results, tmp_path / "sites.zip", site_baselines=True))
    np.testing.assert_array_equal(
        with_sites.baseline_hazard("os", site="test_site")[0].cumulative,
        local.baseline_hazard("os", site="test_site")[0].cumulative,
    )
    (results / "federation.yaml").write_text(yaml.safe_dump({"sites": ["a"], "task": "linear-cox"}))
    with pytest.raises(UserError, match="only multimodal models are exported"):
        export_from_results(results, tmp_path / "no.zip")
