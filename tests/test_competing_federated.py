"""Competing risks through the federation's own pieces: sites send binned counts of the endpoint and
of the competing event (no event time), the server combines them, the sites calibrate crude
cumulative incidences against Aalen-Johansen, the server pools the aggregates; the exported file
drops the per-site competing bins."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_competing_risks import competing_cohort

from stsfl.client.prediction.baseline_site import SiteRisks, baseline_reply
from stsfl.client.prediction.calibration_site import calibration_reply, competing_from_config
from stsfl.common.baseline_document import baseline_document
from stsfl.common.baseline_hazard import BaselineHazard, site_baseline_bins, time_grid
from stsfl.common.cif_calibration import aalen_johansen
from stsfl.common.config import FederationConfig
from stsfl.server.export_model import without_site_baselines
from stsfl.server.phases.calibration_phase import competing_baselines, write_calibration

GRID = {"bin_days": 365.25 / 12, "max_days": 20 * 365.25}


def site_risks(n: int, seed: int, scale: float = 1.0) -> SiteRisks:
    """Endpoints os and dm (dm competes with os): dm's cause-specific log-risk x1 (times `scale`: a
    too extreme model), death without dm from x2; os is death at any time (here: death before dm,
    or censoring at the dm time, enough to mark the competing event)."""
    time, status, x1, x2 = competing_cohort(n, seed)
    os_time, os_event = time, (status == 2).astype(float)
    return SiteRisks(
        ["os", "dm"],
        np.column_stack([os_time, time]),
        np.column_stack([os_event, (status == 1).astype(float)]),
        np.ones((n, 2), bool),
        np.column_stack([x2, scale * x1]),
        competing={"dm": "os"},
    )


def test_competing_bins_are_counts_on_the_grid_and_combine_to_the_pooled_baseline():
    a, b = site_risks(500, 1), site_risks(400, 2)
    replies = {"a": baseline_reply(a, GRID), "b": baseline_reply(b, GRID)}
    entry = replies["a"]["endpoints"]["dm"]["competing"]
    assert entry["cause"] == "os" and "competing" not in replies["a"]["endpoints"]["os"]
    events = np.asarray(entry["bins"]["events"])
    assert np.all(events == np.round(events)) and events.sum() == np.sum(a.competing_arrays(1)[1] == 2)
    document = baseline_document(replies, GRID, model_round=1)
    competing = document["endpoints"]["dm"]["competing"]
    # pooled = one Breslow over both sites' patients (the events and risk sums add up), over the first
    # 5 years: later, bins with fewer than MIN_GROUP_SIZE patients at risk at a site are sent empty
    time = np.concatenate([a.time[:, 1], b.time[:, 1]])
    status = np.concatenate([a.competing_arrays(1)[1], b.competing_arrays(1)[1]])
    eta2 = np.concatenate([a.log_risk[:, 0], b.log_risk[:, 0]])
    expected = BaselineHazard.from_bins(site_baseline_bins(time, status == 2, eta2, time_grid()))
    assert competing["pooled"]["cumulative"][:61] == pytest.approx(expected.cumulative[:61].tolist(), rel=1e-9)
    assert 0.9 * (status == 2).sum() < competing["events"] <= (status == 2).sum() and set(competing["per_site"]) == {"a", "b"}
    stripped = without_site_baselines(document)["endpoints"]["dm"]["competing"]
    assert "per_site_bins" not in stripped and "per_site" not in stripped and "bins" in stripped


def test_sites_calibrate_crude_incidence_and_the_server_pools_it(tmp_path):
    fed = FederationConfig(sites=["a", "b", "c"], holdout=["c"])
    document = baseline_document({"a": baseline_reply(site_risks(1200, 3), GRID)}, GRID, model_round=1)
    hazards = {name: BaselineHazard.from_dict(e["pooled"]) for name, e in document["endpoints"].items()}
    competing = competing_from_config(hazards, competing_baselines(document))
    horizons = [1095.75, 1826.25]
    risks = {"a": site_risks(700, 4), "b": site_risks(600, 5), "c": site_risks(700, 6, scale=2.0)}
    replies = {s: calibration_reply(r, hazards, horizons, competing) for s, r in risks.items()}
    good = replies["a"]["endpoints"]["dm"]["1826.25"]["incidence"]
    time, status = risks["a"].time[:, 1], risks["a"].competing_arrays(1)[1]
    assert good["observed"] == pytest.approx(aalen_johansen(time, status, 1826.25))
    assert good["slope"] == pytest.approx(1.0, abs=0.2) and good["observed_expected"] == pytest.approx(1.0, abs=0.12)
    assert good["without_competing"]["observed_expected"] < good["observed_expected"] - 0.05
    assert replies["c"]["endpoints"]["dm"]["1826.25"]["incidence"]["slope"] < good["slope"] - 0.2  # too extreme
    assert "incidence" not in replies["a"]["endpoints"]["os"]["1826.25"]
    write_calibration(tmp_path, replies, fed)
    stored = json.loads((tmp_path / "calibration.json").read_text())
    pooled = stored["pooled_incidence"]["training"]["dm"]["1826.25"]
    weights = np.array([700, 600])
    observed = [replies[s]["endpoints"]["dm"]["1826.25"]["incidence"]["observed"] for s in ("a", "b")]
    assert pooled["observed"] == pytest.approx(np.average(observed, weights=weights)) and pooled["patients"] == 1300
    assert stored["pooled_incidence"]["held_out"]["dm"]["1826.25"]["sites"] == 1
    assert (tmp_path / "calibration_dm_incidence.png").stat().st_size > 5000
    assert (tmp_path / "decision_dm_incidence.png").stat().st_size > 5000
    assert not (tmp_path / "calibration_os_incidence.png").exists()
