"""The competing-risks benchmark stays runnable: `bench_competing_risks.py --smoke` on a tiny synthetic
cohort (1 epoch, 2 recalibration folds) writes every figure the full run reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stsfl.client.lab.synthetic import generate_cohort, load_synth_config

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_competing_risks.py"


def test_smoke_run_reports_incidence_calibration_brier_and_concordance(tmp_path):
    cohort = tmp_path / "cohort"
    generate_cohort(load_synth_config(tiny=True).model_copy(update={"workers": 1}), cohort, show_progress=False)
    out = tmp_path / "competing_risks.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), str(cohort), "--smoke", "--no-n4", "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["meta"]["held_out"] == "center_2" and report["meta"]["smoke"] is True
    endpoints = report["endpoints"]
    assert set(endpoints) == {"os", "dm", "lr"}
    assert endpoints["dm"]["risk"].startswith("crude cumulative incidence") and endpoints["os"]["risk"] == "1 - S"
    for name, entry in endpoints.items():
        ibs = entry["integrated_brier"]
        assert {"network", "aalen_johansen_or_km", "truth"} <= set(ibs) and all(0 <= v < 1 for v in ibs.values())
        assert ("network_one_minus_s" in ibs) == (name != "os")
        assert set(entry["concordance"]) == {"network", "cox_clinical", "oracle"}
        assert set(entry["calibration"]) == {"3y", "5y"}
        for row in entry["calibration"].values():
            if "skipped" in row:
                continue
            assert {"network", "recalibrated_cross_fitted", "truth"} <= set(row)
            if name != "os":  # the incidence never exceeds the risk without death
                assert row["network"]["expected"] <= row["network_one_minus_s"]["expected"] + 1e-12
    assert "integrated Brier score" in done.stdout and "lr" in done.stdout
