"""The calibration query: a site's decile curves, Crowson fit and decision curve from its own
patients; the server's calibration.json and pictures."""

from __future__ import annotations

import json

import numpy as np
from survival_cohorts import BETA, linear_cohort

from stsfl.client.prediction.baseline_site import SiteRisks, baseline_reply
from stsfl.client.prediction.calibration_site import calibration_reply
from stsfl.common.baseline_document import baseline_document
from stsfl.common.baseline_hazard import BaselineHazard
from stsfl.common.config import FederationConfig
from stsfl.server.phases.calibration_phase import write_calibration


def _risks(n: int, seed: int, scale: float = 1.0) -> SiteRisks:
    x, time, event = linear_cohort(n, seed)
    eta = scale * (x @ np.asarray(BETA))
    return SiteRisks(["os"], time[:, None], event[:, None], np.ones((n, 1), bool), eta[:, None])


def test_sites_report_calibration_curves_and_the_server_draws_them(tmp_path):
    grid = {"bin_days": 365.25 / 12, "max_days": 20 * 365.25}
    document = baseline_document({"a": baseline_reply(_risks(1500, 1), grid)}, grid, model_round=3)
    hazards = {"os": BaselineHazard.from_dict(document["endpoints"]["os"]["pooled"])}
    horizons = [365.25, 1095.75, 1826.25]
    replies = {
        "a": calibration_reply(_risks(800, 2), hazards, horizons),
        "b": calibration_reply(_risks(800, 3, scale=2.0), hazards, horizons),  # a site where risks are too extreme
        "c": calibration_reply(_risks(6, 4), hazards, horizons),
    }
    good, extreme = replies["a"]["endpoints"]["os"]["1095.75"], replies["b"]["endpoints"]["os"]["1095.75"]
    assert abs(good["slope"] - 1) < 0.15 and abs(good["intercept"]) < 0.15
    assert abs(extreme["slope"] - 0.5) < 0.1
    assert len(good["groups"]["n"]) == 10 and sum(good["groups"]["n"]) == 800
    assert "skipped" in replies["c"]["endpoints"]["os"]["365.25"]
    fed = FederationConfig(sites=["a", "b", "c"], holdout=["b"])
    fits = write_calibration(tmp_path, replies, fed)
    assert fits["b"]["os"][1] == extreme["slope"]
    stored = json.loads((tmp_path / "calibration.json").read_text())
    assert stored["holdout"] == ["b"] and set(stored["sites"]) == {"a", "b", "c"}
    assert (tmp_path / "calibration_os.png").stat().st_size > 5000 and (tmp_path / "decision_os.png").is_file()
