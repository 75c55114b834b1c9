"""The product path with real processes: the tiny synthetic cohort (NIfTI MRI, pyramidal TIFF
slides, clinical.csv per centre), the multimodal network of the cpu-small preset, sts-server +
one sts-client per centre on loopback, the last centre held out, 1 round, cross-site validation,
the prediction phases and the sites' own outputs (multi-round runs on real processes: the other
integration tests)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from report_browser import assert_report_renders

from stsfl.client.lab.demo_federation import run_demo_federation
from stsfl.client.lab.synthetic import generate_cohort, load_synth_config
from stsfl.server.reports.results import read_site_metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_multimodal_federation_on_the_tiny_synthetic_cohort(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.05")
    cohort = tmp_path / "cohort"
    generate_cohort(load_synth_config(None, tiny=True), cohort)
    summary = run_demo_federation(cohort, tmp_path / "results", "cpu-demo", rounds=1)

    rows = read_site_metrics(tmp_path / "results")
    trained = {r["site"] for r in rows if r["round"] == 1 and r["phase"] == "train"}
    assert trained == {"center_0", "center_1"}, "the held-out centre never trains"
    evaluated = {r["site"] for r in rows if r["phase"] == "evaluate"}
    assert evaluated == {"center_0", "center_1", "center_2"}
    held_out = summary["holdout_selected"]["center_2"]
    assert 0.0 <= held_out["c-harrell-os"] <= 1.0
    assert held_out["eval-events-os"] >= 1
    assert {"c-uno-os", "ibs-os", "eval-events-dm"} <= set(held_out)
    assert any(k.startswith("auc-") and k.endswith("d-os") for k in held_out), "a td-AUC inside follow-up"
    # the clinical Cox model the network started from, scored at the same centre before round 1
    assert 0.0 <= summary["holdout_clinical_cox"]["center_2"]["c-harrell-os"] <= 1.0
    assert yaml.safe_load((tmp_path / "results" / "sites" / "center_0.yaml").read_text())["threads"] >= 1
    with open(tmp_path / "results" / "cross_site.csv", newline="") as fh:
        cells = {
            (r["model"], site): r[site]
            for r in csv.DictReader(fh)
            if r["metric"] == "c-harrell" and r["endpoint"] == "os"
            for site in ("center_0", "center_1", "center_2")
        }
    assert {m for m, _ in cells} == {"global", "local-center_0", "local-center_1"} and len(cells) == 9
    # A training site's validation split of the tiny cohort may hold no event (an empty cell);
    # the held-out centre evaluates all its patients, events included.
    assert all(0.0 <= float(v) <= 1.0 for (_, site), v in cells.items() if v or site == "center_2"), cells
    history = [json.loads(line) for line in (tmp_path / "results" / "rounds.jsonl").read_text().splitlines()]
    weights = history[-1]["blend_weights"]
    assert set(weights) == {"fused", "mri", "wsi", "clinical"} and abs(sum(weights.values()) - 1.0) < 1e-6
    statistics = json.loads((tmp_path / "results" / "statistics.json").read_text())
    assert set(statistics["global"]["mean"]) >= {"age", "tumour_size"}  # federated standardisation
    assert set(statistics["per_site_counts"]) == {"center_0", "center_1", "center_2"}
    # each site's own outputs stay at the site (default <root>/.stsfl/outputs): the server has counts only
    with open(cohort / "center_2" / ".stsfl" / "outputs" / "stsfl-demo" / "risk_scores.csv", newline="") as fh:
        scores = list(csv.DictReader(fh))
    assert len(scores) == summary["site_outputs"]["sites"]["center_2"]["patients"] > 0
    assert {r["split"] for r in scores} == {"external"}
    # the run report sts-server wrote at the end, as Chromium renders it
    text = assert_report_renders(tmp_path / "results", tmp_path)
    assert "usable patients" in text  # the cohort table has the modality coverage the sites reported
    assert all(statistics["per_site_counts"][s]["modalities"]["clinical"] > 0 for s in ("center_0", "center_2"))
