"""External validation of federated models: the metrics a site reports, the cross-site matrix, the
leave-one-centre-out (LOCO) table and their configuration; then the real orchestrator and
ClientApp in one process (tests/inprocess_grid.py) on three TCGA-BRCA regions: a federation
with cross-site validation and the prediction phases, and a LOCO run of three folds."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw, cumulative_dynamic_auc
from sksurv.util import Surv

from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.config import ConfigError, FederationConfig, load_config
from stsfl.common.site_metrics import describe_metrics, endpoint_metrics
from stsfl.server.federation.loco import fold_config, loco_config, loco_means, loco_rows, run_loco, write_loco
from stsfl.server.phases.cross_site import CrossSiteMatrix, write_cross_site


def _cohort(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    event_time = rng.exponential(900 * np.exp(-risk))
    censor = rng.uniform(100, 3000, n)
    return np.minimum(event_time, censor), (event_time <= censor).astype(float), risk


# ---------------------------------------------------------------------------- site metrics
def test_endpoint_metrics_match_scikit_survival():
    time, event, risk = _cohort()
    got = endpoint_metrics("os", time, event, risk, horizons=(365.0, 730.0, 99999.0))
    y = Surv.from_arrays(event=event > 0.5, time=time)
    assert got["eval-events-os"] == event.sum()
    assert got["c-harrell-os"] == pytest.approx(concordance_index_censored(event > 0.5, time, risk)[0])
    tau = np.quantile(time, 0.8)
    assert got["c-uno-os"] == pytest.approx(concordance_index_ipcw(y, y, risk, tau=tau)[0])
    aucs, _ = cumulative_dynamic_auc(y, y, risk, [365.0, 730.0])
    assert [got["auc-365d-os"], got["auc-730d-os"]] == pytest.approx(list(aucs))
    assert "auc-99999d-os" not in got, "a horizon beyond follow-up is left out"
    assert 0.0 < got["ibs-os"] < 0.25
    assert got["c-harrell-os"] > 0.6, "the risk drives the hazard"
    line = describe_metrics(got)
    assert line.startswith("os: C ") and "Uno" in line and "AUC 365d" in line and "IBS" in line


def test_endpoint_metrics_without_events_report_only_the_count():
    time, _, risk = _cohort(20)
    assert endpoint_metrics("dm", time, np.zeros(20), risk) == {"eval-events-dm": 0.0}


# ---------------------------------------------------------------------------- cross-site matrix
def _replies() -> dict:
    def cell(c: float) -> dict:
        return {"c-harrell-os": c, "c-uno-os": c - 0.01, "eval-events-os": 5.0, "eval-events-dm": 2.0, "c-harrell-dm": 0.5}

    return {
        "a": {"global": cell(0.71), "local-a": cell(0.80), "local-b": cell(0.60)},
        "b": {"global": cell(0.69), "local-a": cell(0.58), "local-b": cell(0.77)},
        # the held-out centre "h" did not reply
    }


def test_cross_site_matrix_assembly_and_files(tmp_path):
    matrix = CrossSiteMatrix.from_site_replies(_replies(), ["global", "local-a", "local-b"], ["a", "b", "h"], ["h"])
    assert matrix.endpoints == ["dm", "os"]
    table = matrix.table("c-harrell", "os")
    assert table.shape == (3, 3)
    np.testing.assert_allclose(table[:, :2], [[0.71, 0.69], [0.80, 0.58], [0.60, 0.77]])
    assert np.isnan(table[:, 2]).all(), "a site that did not reply leaves nan cells"
    assert np.isnan(matrix.table("c-uno", "dm")).all(), "a metric no site reported is nan"
    paths = write_cross_site(tmp_path, matrix)
    assert [p.name for p in paths] == ["cross_site.csv", "cross_site.json", "cross_site.png"]
    with open(tmp_path / "cross_site.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["metric", "endpoint", "model", "a", "b", "h"]
    assert len(rows) == 1 + 2 * 2 * 3  # (Harrell, Uno) x (dm, os) x 3 models
    assert ["c-harrell", "os", "local-a", "0.800000", "0.580000", ""] in rows
    data = json.loads((tmp_path / "cross_site.json").read_text())
    assert data["roles"] == {"a": "training", "b": "training", "h": "held-out"}
    assert matrix.site_labels("dm") == ["a\n(training, 2 events)", "b\n(training, 2 events)", "h\n(held-out)"]
    assert data["cells"]["local-b"]["b"]["c-uno-os"] == pytest.approx(0.76)
    assert (tmp_path / "cross_site.png").stat().st_size > 10_000
    text = "\n".join(matrix.text_lines())
    assert "local-a" in text and "0.800" in text and "Harrell's C, os" in text


# ---------------------------------------------------------------------------- LOCO table and config
def test_loco_rows_and_means(tmp_path):
    summaries = {
        "a": {
            "selected_round": 2,
            "holdout_selected": {"a": {"eval-patients": 30, "eval-events-os": 9, "c-harrell-os": 0.70, "c-uno-os": 0.68}},
        },
        "b": {"selected_round": 1, "holdout_selected": {"b": {"eval-patients": 20, "eval-events-os": 4, "c-harrell-os": 0.60}}},
    }
    rows = loco_rows(summaries)
    assert [(r["held_out"], r["endpoint"], r["events"], r["selected_round"]) for r in rows] == [
        ("a", "os", 9, 2),
        ("b", "os", 4, 1),
    ]
    assert math.isnan(rows[1]["c_uno"])
    means = loco_means(rows)["os"]
    assert means["c_harrell_mean"] == pytest.approx(0.65) and means["c_harrell_sd"] == pytest.approx(np.std([0.7, 0.6], ddof=1))
    assert means["c_uno_mean"] == pytest.approx(0.68) and means["c_uno_centres"] == 1
    table = write_loco(tmp_path, rows, FederationConfig(sites=["a", "b"], mode="loco"))
    assert table["rows"][1]["c_uno"] is None and table["mean"]["os"]["c_uno_sd"] is None
    with open(tmp_path / "loco.csv", newline="") as fh:
        assert list(csv.DictReader(fh))[1] == {
            "held_out": "b",
            "endpoint": "os",
            "c_harrell": "0.6",
            "c_uno": "",
            "events": "4",
            "patients": "20",
            "selected_round": "1",
        }
    fold = fold_config({"name": "fed", "sites": ["a", "b"], "mode": "loco"}, "b")
    assert fold["holdout"] == ["b"] and fold["mode"] == "single" and fold["name"] == "fed-loco-b"
    FederationConfig.model_validate(fold)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sites: [a, b]\nmode: loco\nholdout: [a]\n", "leave `holdout` empty"),
        ("sites: [a, b, c]\nmode: loco\nmin_sites: 3\n", "trains 2 site(s) per fold but min_sites=3"),
        ("sites: [a]\nmode: loco\n", "at least 2 sites"),
        ("sites: [a, b]\nmode: loo\n", "mode: expected 'single' or 'loco'"),
        ("sites: [a, b]\ncross_site: {local_epochs: 0}\n", "cross_site.local_epochs"),
        ("sites: [a, b]\ncross_site: {epochs: 2}\n", "cross_site.epochs: unknown key"),
        ("sites: [a, b]\neval_horizons_days: []\n", "eval_horizons_days"),
    ],
)
def test_configuration_errors_name_the_file_and_key(tmp_path, body, message):
    path = tmp_path / "federation.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(path, FederationConfig)
    assert str(path) in str(err.value) and message in str(err.value)


def test_the_loco_flag_validates_like_the_yaml_key(tmp_path):
    path = tmp_path / "federation.yaml"
    path.write_text("sites: [a, b]\nholdout: [b]\n")
    assert load_config(path, FederationConfig).mode == "single"
    with pytest.raises(ConfigError, match="leave `holdout` empty"):
        loco_config(path, force=True)


# ---------------------------------------------------------------------------- in-process federations
BODY = """task: linear-cox
strategy: fedavg
rounds: 2
eval_every: 1
train: {epochs_per_round: 5, lr: 0.05, seed: 3}
eval_horizons_days: [365, 1095]
"""


@pytest.fixture(scope="module")
def region_sites(tcga_brca_dir, tmp_path_factory) -> dict:
    paths = write_region_sites(tcga_brca_dir, tmp_path_factory.mktemp("regions"), regions=[0, 1, 3])
    return {p.stem: p for p in paths}


def test_cross_site_validation_after_the_last_round(region_sites, tmp_path, server_identity):
    config = tmp_path / "federation.yaml"
    config.write_text(
        BODY + "name: xsite\nsites: [region_0, region_1, region_3]\nholdout: [region_3]\n"
        "cross_site: {enabled: true, local_epochs: 3}\nsite_outputs: {enabled: false}\n"
    )
    grid = InProcessGrid(region_sites)
    summary = run_in_process(grid, config, tmp_path / "results")
    assert "query.site_outputs" not in grid.sent and summary["site_outputs"] is None, "switched off in the YAML"
    after_training = grid.sent[len(grid.sent) - grid.sent[::-1].index("train") :]
    assert [m for m in after_training if not m.startswith("query.")] == ["evaluate.cross"] * 3, (
        "one cross-site message per site, after the last round (then the prediction queries)"
    )
    assert grid.sent.count("train") == 2 * 2 + 2, "2 rounds x 2 training sites + 2 fine-tunings"
    held_out = summary["holdout_selected"]["region_3"]
    assert {"c-harrell-os", "c-uno-os", "auc-365d-os", "auc-1095d-os", "ibs-os", "eval-events-os"} <= set(held_out)
    data = json.loads((tmp_path / "results" / "cross_site.json").read_text())
    assert data["models"] == ["global", "local-region_0", "local-region_1"]
    for model in data["models"]:
        for site in data["sites"]:
            assert 0.0 < data["cells"][model][site]["c-harrell-os"] < 1.0
    # The global row is the final global model: the same numbers as the last round's evaluation.
    last = [json.loads(line) for line in (tmp_path / "results" / "rounds.jsonl").read_text().splitlines()][-1]
    assert data["cells"]["global"]["region_3"]["c-harrell-os"] == pytest.approx(
        last["evaluate_sites"]["region_3"]["c-harrell-os"]
    )
    # Fine-tuning moves a site's model away from the global one.
    with (
        np.load(tmp_path / "results" / "model_final.npz") as final,
        np.load(tmp_path / "results" / "model_local_region_0.npz") as local,
    ):
        assert any(not np.allclose(final[k], local[k]) for k in final.files)
    assert (tmp_path / "results" / "cross_site.png").is_file()
    # After cross-site validation: the baseline hazard of the last round's model from the training sites
    # and calibration at every site.
    results, training = tmp_path / "results", ["region_0", "region_1"]
    baseline = json.loads((results / "baseline_hazard.json").read_text())
    assert baseline["sites"] == training and baseline["model_round"] == 2
    os_ = baseline["endpoints"]["os"]
    counts = json.loads((results / "statistics.json").read_text())["per_site_counts"]
    # every training-site event inside the 20-year grid (training + validation rows: at least the training split's)
    assert os_["events"] >= sum(counts[s]["events"]["os"] for s in training)
    assert os_["pooled"]["cumulative"][-1] > 0 and set(os_["per_site"]) == set(training)
    assert (results / "baseline_hazard.png").is_file()
    calibration = json.loads((results / "calibration.json").read_text())
    assert set(calibration["sites"]) == {*training, "region_3"}
    # 9 events by 3 years among region 3's non-test rows: too few for an estimate; 13 by 5 years
    assert calibration["sites"]["region_3"]["endpoints"]["os"]["1095.75"]["skipped"].startswith("9 events before the horizon")
    five_years = calibration["sites"]["region_3"]["endpoints"]["os"]["1826.25"]
    assert np.isfinite(five_years["slope"]) and len(five_years["groups"]["n"]) == 10
    assert (results / "calibration_os.png").is_file()


def test_loco_runs_one_federation_per_centre(region_sites, tmp_path, server_identity):
    config = tmp_path / "loco.yaml"
    config.write_text(BODY + "name: loco\nsites: [region_0, region_1, region_3]\nmode: loco\n")
    grid = InProcessGrid(region_sites)
    folds = []

    def run_fold(fold_yaml, fold_results, resume):
        folds.append((fold_results.name, load_config(fold_yaml, FederationConfig).holdout, resume))
        return run_in_process(grid, fold_yaml, fold_results, resume)

    table = run_loco(config, tmp_path / "results", run_fold)
    assert folds == [("region_0", ["region_0"], False), ("region_1", ["region_1"], False), ("region_3", ["region_3"], False)]
    assert [r["held_out"] for r in table["rows"]] == ["region_0", "region_1", "region_3"]
    for row in table["rows"]:
        fold = json.loads((tmp_path / "results" / "loco" / row["held_out"] / "summary.json").read_text())
        assert row["c_harrell"] == fold["holdout_selected"][row["held_out"]]["c-harrell-os"]
        assert 0.0 < row["c_harrell"] < 1.0 and row["events"] > 0
    assert (tmp_path / "results" / "loco.csv").read_text().count("\n") == 4
    # Every fold's sites scored all their rows at the site (a tabular site: risk scores only), the
    # held-out centre's as external; the risks come from the fold's pooled baseline hazard.
    for fold in ("region_0", "region_1", "region_3"):
        for site, site_yaml in region_sites.items():
            with open(site_yaml.parent / site / ".stsfl" / "outputs" / f"loco-loco-{fold}" / "risk_scores.csv") as fh:
                rows = list(csv.DictReader(fh))
            assert len(rows) == (site_yaml.parent / site / "clinical.csv").read_text().count("\n") - 1
            splits = {r["split"] for r in rows}
            if site == fold:
                assert splits == {"external"}
            else:
                assert "train" in splits and splits <= {"train", "validation", "test"}
            assert all(0.0 <= float(r["os_risk_1y"]) <= float(r["os_risk_5y"]) <= 1.0 for r in rows)
    # A second call finds every fold done and rebuilds the same table without training.
    folds.clear()
    assert run_loco(tmp_path / "results" / "federation.yaml", tmp_path / "results", run_fold) == table
    assert folds == []
