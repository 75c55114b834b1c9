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


def _run_bench(cohort: Path, options: list[str], out: Path, work: Path) -> subprocess.CompletedProcess:
    """The benchmark's smoke run in a subprocess (asserted to succeed)."""
    done = subprocess.run(
        [sys.executable, str(BENCH), str(cohort), "--smoke", *options, "--out", str(out), "--work", str(work)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_smoke_run_reports_incidence_calibration_brier_and_concordance(tmp_path):
    cohort = tmp_path / "cohort"
    generate_cohort(load_synth_config(tiny=True).model_copy(update={"workers": 1}), cohort, show_progress=False)
    out = tmp_path / "competing_risks.json"
    done = _run_bench(cohort, ["--no-n4"], out, tmp_path / "work")
    report = json.loads(out.read_text())
    assert report["meta"]["held_out"] == "center_2" and report["meta"]["smoke"] is True
    endpoints = report["endpoints"]
    assert set(endpoints) == {"os", "dm", "lr"}
    assert endpoints["dm"]["risk"].startswith("crude cumulative incidence") and endpoints["os"]["risk"] == "1 - S"
    for name, entry in endpoints.items():
        ibs = entry["integrated_brier"]
        assert {"network", "aalen_johansen_or_km", "truth"} <= set(ibs) and all(0 <= v < 1 for v in ibs.values())
        assert ("network_one_minus_s" in ibs) == (name != "os")
        assert set(entry["concordance"]) == {"network", "cox_clinical", "oracle", "oracle_clinical"}
        assert set(entry["calibration"]) == {"3y", "5y"}
        for row in entry["calibration"].values():
            if "skipped" in row:
                continue
            assert {"network", "recalibrated_cross_fitted", "truth"} <= set(row)
            if name != "os":  # the incidence never exceeds the risk without death
                assert row["network"]["expected"] <= row["network_one_minus_s"]["expected"] + 1e-12
    assert "integrated Brier score" in done.stdout and "lr" in done.stdout


def _finished_federation(folder: Path, cohort: Path, preset_yaml: Path, holdout: str) -> None:
    """A results folder as a federation leaves it (federation.yaml, statistics.json, summary.json,
    model_selected.npz); the kept model is a fresh network whose lr log-risk is zero for everyone."""
    import numpy as np
    import torch
    import yaml

    from stsfl.client.data.site_prepare import prepare_site
    from stsfl.common.clinical_features import clinical_dim
    from stsfl.common.clinical_stats import combine_clinical_sums
    from stsfl.common.config import SiteConfig, load_config, load_preset, load_schema
    from stsfl.tasks.multimodal.model import MultimodalCoxNet

    schema, preset = load_schema(), load_preset(str(preset_yaml))
    names = sorted(p.parent.name for p in cohort.glob("*/site.yaml"))
    folder.mkdir(parents=True)
    fed = {"name": f"held-{holdout}", "preset": str(preset_yaml), "sites": names, "holdout": [holdout]}
    (folder / "federation.yaml").write_text(yaml.safe_dump(fed))
    training = [
        prepare_site(load_config(cohort / n / "site.yaml", SiteConfig), cohort / n / "site.yaml", preset, schema=schema)
        for n in names
        if n != holdout
    ]
    stats = combine_clinical_sums([s.clinical_sums() for s in training], schema)
    (folder / "statistics.json").write_text(json.dumps({"global": stats.to_dict()}))
    (folder / "summary.json").write_text(json.dumps({"selected_round": 3}))
    torch.manual_seed(0)
    net = MultimodalCoxNet(preset, clinical_dim(schema), len(schema.endpoints))
    arrays = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    lr = schema.endpoint_names.index("lr")
    arrays["fused_head.weight"][lr] = 0.0
    arrays["fused_head.bias"][lr] = 0.0
    arrays["clinical_linear.weight"][lr] = 0.0
    np.savez(folder / "model_selected.npz", **arrays)


def test_finished_federations_are_scored_and_pooled_over_their_held_out_centres(tmp_path):
    """--federation: no training; each run's kept model scores its own held-out centre, and the
    calibration is pooled over the runs' held-out patients."""
    import yaml

    from stsfl.common.config import load_preset, without_n4

    cohort = tmp_path / "cohort"
    generate_cohort(load_synth_config(tiny=True).model_copy(update={"workers": 1}), cohort, show_progress=False)
    preset_yaml = tmp_path / "preset.yaml"
    preset_yaml.write_text(yaml.safe_dump(without_n4(load_preset("cpu-small")).model_dump(mode="json")))
    runs = [tmp_path / f"results-{c}" for c in ("center_1", "center_2")]
    for run in runs:
        _finished_federation(run, cohort, preset_yaml, run.name.removeprefix("results-"))
    out = tmp_path / "pooled.json"
    done = _run_bench(cohort, ["--federation", *map(str, runs)], out, tmp_path / "work")
    report = json.loads(out.read_text())
    per_run = report["runs"]
    assert [r["meta"]["held_out"] for r in per_run.values()] == ["center_1", "center_2"]
    assert all(r["meta"]["training"].startswith("federation") for r in per_run.values())
    assert per_run["results-center_1"]["meta"]["training_centres"] == ["center_0", "center_2"]
    for name, pooled in report["pooled"].items():
        entries = [r["endpoints"][name] for r in per_run.values()]
        assert pooled["patients"] == sum(e["patients"] for e in entries)
        assert pooled["events"] == sum(e["events"] for e in entries)
        assert pooled["runs_ibs_below_aalen_johansen_or_km"].endswith("of 2")
        harrell = [e["concordance"]["network"]["harrell"] for e in entries]
        assert abs(pooled["concordance_mean"]["network"]["harrell"] - sum(harrell) / 2) < 1e-12
    # the kept model's lr log-risk is zero for everyone: every pair ties, whatever the run
    for entry in per_run.values():
        assert entry["endpoints"]["lr"]["concordance"]["network"]["harrell"] == 0.5
        assert entry["endpoints"]["os"]["concordance"]["network"]["harrell"] != 0.5
    assert "pooled over 2 runs" in done.stdout
