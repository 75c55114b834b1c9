"""`validation_fraction: 0`: no training site keeps validation patients. The run completes (the
calibration query no longer crashes on an empty validation split), says that it kept the last
round instead of claiming a validation-loss selection, and the held-out centre is still scored."""

from __future__ import annotations

import json

from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 - fixture

from stsfl.client.lab.tcga_brca import write_region_sites


def test_a_run_without_validation_patients_completes_and_says_how_it_selected(tcga_brca_dir, tmp_path, server_identity):
    sites = {p.stem: p for p in write_region_sites(tcga_brca_dir, tmp_path / "regions", regions=[0, 1, 3])}
    config = tmp_path / "federation.yaml"
    config.write_text(
        "task: linear-cox\nrounds: 2\ntrain: {epochs_per_round: 2, lr: 0.05}\nvalidation_fraction: 0\n"
        "sites: [region_0, region_1, region_3]\nholdout: [region_3]\ncross_site: {enabled: false}\n"
    )
    summary = run_in_process(InProcessGrid(sites), config, tmp_path / "results")
    assert summary["selected_round"] == 2
    # (a tabular training site still evaluates its `test` fold, whose few events cannot select a round)
    assert summary["selection"].startswith("last round:") and "too few to choose a round" in summary["selection"]
    assert summary["holdout_selected"]["region_3"]["eval-events-os"] > 0
    calibration = json.loads((tmp_path / "results" / "calibration.json").read_text())["sites"]
    for site in ("region_0", "region_1"):
        assert calibration[site]["patients"] == 0
        assert all(
            h == {"skipped": "no validation split (validation_fraction: 0)"}
            for h in calibration[site]["endpoints"]["os"].values()
        )
    assert "slope" in calibration["region_3"]["endpoints"]["os"]["1826.25"]  # 15 events by 5 years
