"""The run report from a results folder written by the server's own ResultsFolder: sections, the
omission notes for files a run did not produce, the aggregate C-index interval, and the page in
headless Chromium. (The report of a real federation is checked in tests/integration/test_demo_federation.py.)"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from report_browser import assert_report_renders

from stsfl.common.console import UserError
from stsfl.common.metrics import bootstrap_ci, harrell_c
from stsfl.common.risk_group_km import risk_group_km
from stsfl.server.reports.report import build_report
from stsfl.server.reports.report_data import RunResults, c_index_ci, cohort_rows, evaluation_rows, head_losses
from stsfl.server.reports.results import ResultsFolder

REPO = Path(__file__).resolve().parents[1]
SITES, HOLDOUT = ["site_a", "site_b", "site_c"], "site_c"


def _site_eval(rng: np.random.Generator, n: int, strength: float) -> dict[str, float]:
    """Metrics a site would report for a model with the given risk signal (simulated patients)."""
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-strength * risk)) * 1000
    event = (rng.uniform(size=n) < 0.6).astype(float)
    return {
        "eval-patients": float(n),
        "eval-events-os": float(event.sum()),
        "c-harrell-os": harrell_c(time, event, risk),
        "auc-365d-os": 0.7,
        "ibs-os": 0.18,
        **risk_group_km("os", time, event, risk),
    }


@pytest.fixture
def results(tmp_path) -> Path:
    rng = np.random.default_rng(3)
    folder = ResultsFolder(tmp_path / "results")
    (folder.root / "federation.yaml").write_text(
        f"name: unit\ntask: multimodal\npreset: cpu-small\nsites: {SITES}\nholdout: [{HOLDOUT}]\nrounds: 3\n"
    )
    history = []
    for r in (1, 2, 3):
        train = {
            s: {
                "num-events": 5.0 + i,
                "train-loss-fused": 3.0 - 0.2 * r + i,
                "train-loss-mri": 3.2 - 0.1 * r,
                "val-loss-fused": 1.5 - 0.1 * r,
            }
            for i, s in enumerate(SITES[:2])
        }
        record = {"round": r, "train_sites": train, "blend_weights": {"fused": 0.4, "mri": 0.1 * r, "clinical": 0.6 - 0.1 * r}}
        if r > 1:
            record["evaluate_sites"] = {s: _site_eval(rng, 40, 0.3 * r) for s in SITES}
        history.append(record)
    folder.write_history(history)
    folder.write_json(
        "statistics.json",
        {
            "per_site_counts": {
                s: {
                    "patients": 30,
                    "events": {"os": 9},
                    "usable_patients": 40,
                    "modalities": {"mri": 38, "wsi": 20, "clinical": 40},
                }
                for s in SITES
            }
        },
    )
    folder.write_json(
        "summary.json",
        {
            "federation": "unit",
            "holdout_sites": [HOLDOUT],
            "selected_round": 3,
            "holdout_selected": {HOLDOUT: history[-1]["evaluate_sites"][HOLDOUT]},
        },
    )
    folder.write_status("done", completed_rounds=3)
    return folder.root


def test_report_has_every_section_and_notes_the_missing_files(results):
    page = build_report(results).read_text()
    for title in (
        "Cohort per site",
        "Training",
        "Evaluation",
        "Kaplan-Meier by predicted risk group",
        "Calibration",
        "Cross-site matrix",
    ):
        assert f">{title}" in page
    assert "no cross_site.csv" in page and "no baselines.json" in page and "no calibration.json" in page
    assert "Leave-one-centre-out" not in page  # not a LOCO run: no section at all
    assert "38 (95 %)" in page  # MRI coverage of 40 usable patients
    assert {p.name for p in (results / "report").glob("*.png")} == {
        "cohort.png",
        "losses.png",
        "blend_weights.png",
        "c_index_sites.png",
        "c_index_rounds.png",
        "km_risk_groups.png",
    }
    assert "log-rank" in page


def test_optional_files_add_their_tables(results):
    with open(results / "cross_site.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(
            [["metric", "endpoint", "model", *SITES], ["c-harrell", "os", "global", "0.612345", "", "0.701234"]]
        )
    baselines = REPO / "tests" / "benchmarks" / "results" / "baselines.json"
    page = build_report(results, baselines).read_text()
    assert "0.612" in page and "0.701" in page and "no cross_site.csv" not in page
    doc = json.loads(baselines.read_text())
    c = doc["models"]["cox_clinical"]["os"]["harrell_c"]
    assert f"{c['estimate']:.3f} ({c['low']:.3f}&ndash;{c['high']:.3f})" in page
    assert (results / "report" / "baselines.png").is_file()
    # the optional inputs gone again: their sections and figures go with them
    (results / "cross_site.csv").unlink()
    assert "0.612345"[:5] not in build_report(results).read_text()
    assert not (results / "report" / "baselines.png").exists()


def test_losses_are_events_weighted_over_training_sites(results):
    run = RunResults.load(results)
    train = dict(head_losses(run)["train"]["fused"])
    # site_a (5 events) 3.0 - 0.2 r, site_b (6 events) 4.0 - 0.2 r
    assert train[2] == pytest.approx((5 * 2.6 + 6 * 3.6) / 11)
    rows = evaluation_rows(run)
    assert rows[0].site == HOLDOUT and rows[0].role == "held out"


def test_c_index_interval_from_aggregates_matches_the_bootstrap():
    """Uncensored data, 150 patients: the Hanley-McNeil width is within 30 % of a patient bootstrap's."""
    rng = np.random.default_rng(0)
    n = 150
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-0.8 * risk))
    event = (time < np.quantile(time, 0.5)).astype(float)  # "event before the median" as a binary outcome
    c = harrell_c(time, event, risk)
    boot = bootstrap_ci(lambda i: harrell_c(time[i], event[i], risk[i]), n, n_boot=300, seed=1)
    low, high = c_index_ci(c, event.sum(), n)
    assert low < c < high
    assert abs((high - low) - (boot.high - boot.low)) < 0.3 * (boot.high - boot.low)
    assert c_index_ci(0.7, 0, 20) is None and c_index_ci(0.7, 20, 20) is None


def test_not_a_results_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not a results folder"):
        build_report(tmp_path)


def test_report_renders_in_headless_chromium(results, tmp_path):
    build_report(results)
    text = assert_report_renders(results, tmp_path)
    assert "Omitted: no cross_site.csv" in text


def test_sts_server_report_command(results, tmp_path):
    from stsfl.server.cli import main

    copy = shutil.copytree(results, tmp_path / "copy")
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(copy), "--baselines", str(tmp_path / "missing.json")])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(copy)])
    assert exit_.value.code == 0 and (copy / "report.html").is_file()


def test_labels_say_what_a_held_out_centre_counted_and_few_events_give_no_estimate(results):
    run = RunResults.load(results)
    held_out = next(r for r in cohort_rows(run) if r["site"] == HOLDOUT)
    evaluated = run.rounds[-1]["evaluate_sites"][HOLDOUT]
    assert held_out["counted"] == "evaluated (all usable patients)"
    assert (held_out["patients"], held_out["events"]) == (40, {"os": int(evaluated["eval-events-os"])})  # not its 30
    assert next(r for r in cohort_rows(run) if r["site"] == "site_a")["counted"] == "training split"
    horizon = {"skipped": "3 events before the horizon (< 10): too few to estimate calibration"}
    fit = {"intercept": 0.05, "slope": 0.91, "observed": 31.0, "expected": 29.4, "groups": {}, "decision": {}}
    incidence = {"observed": 0.21, "expected": 0.23, "observed_expected": 0.913, "slope": 0.88, "intercept": -0.1}
    without = {"observed": 0.21, "expected": 0.3, "observed_expected": 0.7, "slope": 0.8, "intercept": -0.4}
    dm = fit | {"incidence": incidence | {"without_competing": without}}
    (results / "calibration.json").write_text(
        json.dumps(
            {
                "holdout": [HOLDOUT],
                "sites": {
                    HOLDOUT: {"patients": 40, "endpoints": {"os": {"1095.75": horizon}}},
                    "site_a": {"patients": 90, "endpoints": {"os": {"1095.75": fit}, "dm": {"1095.75": dm}}},
                },
            }
        )
    )
    page = build_report(results).read_text()
    assert "patients (training split)" not in page and "<th>counted over</th>" in page
    assert "not estimated: 3 events before the horizon (&lt; 10): too few to estimate calibration" in page
    assert "<td>+0.05</td><td>0.91</td>" in page
    # dm competes with death: its crude incidence's O/E and slope beside those of 1 - S
    assert "<td>0.210</td><td>0.230</td><td>0.91 / 0.88</td><td>0.70 / 0.80</td>" in page
