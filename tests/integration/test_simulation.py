"""`sts-server --simulate`: the same ServerApp and ClientApp on Flower's simulation engine.

The tiny synthetic cohort (3 centres: NIfTI MRI, pyramidal TIFF slides, clinical.csv), the
multimodal network of the cpu-small preset, 3 virtual SuperNodes (one per centre, each reading
its own site YAML), the last centre held out, 2 rounds, 2 CPUs and 1 thread per site."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from site_builder import expected_validation

from stsfl.client.lab.synthetic import generate_cohort, load_synth_config
from stsfl.server.cli import run_federation
from stsfl.server.reports.results import read_site_metrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CENTRES = ["center_0", "center_1", "center_2"]


def test_simulated_federation_writes_the_same_results_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.05")
    cohort = tmp_path / "cohort"
    generate_cohort(load_synth_config(None, tiny=True), cohort)
    config = tmp_path / "federation.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "simulated",
                "task": "multimodal",
                "preset": "cpu-small",
                "sites": CENTRES,
                "holdout": ["center_2"],
                "rounds": 2,
                "train": {"epochs_per_round": 1, "lr": 0.01},
                "min_sites": 2,
                "round_timeout_s": 300,
                "wait_for_sites_s": 120,
                "eval_every": 2,
                # the prediction phases and site outputs run on real processes in test_demo_federation
                "prediction": {"baseline": False},
                "site_outputs": {"enabled": False},
                # relative to this YAML, as a user would write them
                "simulation": {"site_configs": {c: f"cohort/{c}/site.yaml" for c in CENTRES}, "cpus": 2, "threads_per_site": 1},
            }
        )
    )
    lines: list[str] = []
    summary = run_federation(config, tmp_path / "results", simulate=True, echo=lines.append)

    results = tmp_path / "results"
    assert any("simulating 3 sites" in line for line in lines)
    for name in (
        "federation.yaml",
        "status.json",
        "statistics.json",
        "site_metrics.csv",
        "rounds.jsonl",
        "summary.json",
        "checkpoint.npz",
        "model_final.npz",
        "model_selected.npz",
        "server.log",
        "superlink.log",
    ):
        assert (results / name).is_file(), f"{name} missing from the results folder"
    rows = read_site_metrics(results)
    for server_round in (1, 2):
        trained = {r["site"] for r in rows if r["round"] == server_round and r["phase"] == "train"}
        assert trained == {"center_0", "center_1"}, "each virtual node is its own site; the held-out one never trains"
        for site in ("center_0", "center_1"):
            metrics = {
                r["metric"]: r["value"]
                for r in rows
                if r["round"] == server_round and r["site"] == site and r["phase"] == "train"
            }
            assert {"train-loss-fused", "num-events", "bytes-up", "bytes-down"} <= set(metrics)
    evaluated = {r["site"] for r in rows if r["phase"] == "evaluate"}
    assert evaluated == set(CENTRES)
    held_out = summary["holdout_selected"]["center_2"]
    assert 0.0 <= held_out["c-harrell-os"] <= 1.0 and held_out["eval-events-os"] >= 1
    statistics = json.loads((results / "statistics.json").read_text())
    # Each virtual node read its own centre: its training-split size is that centre's.
    counts = statistics["per_site_counts"]
    for centre in CENTRES:
        pids = pd.read_csv(cohort / centre / "clinical.csv", dtype={"patient_id": str})["patient_id"].tolist()
        validating = expected_validation(cohort / centre / "clinical.csv", pids, 0, 0.2)
        assert counts[centre]["patients"] == len(pids) - len(validating), centre
    assert json.loads((results / "status.json").read_text())["phase"] == "done"
