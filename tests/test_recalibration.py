"""Recalibration at a new centre without training: the site's own slope and baselines (and the
competing event's) from its own patients; cross-fitted calibration before and after."""

from __future__ import annotations

import numpy as np
import pytest
from test_competing_federated import site_risks

from stsfl.client.prediction.recalibrate_site import recalibrate_risks
from stsfl.client.prediction.recalibration import RiskModel, cox_slope, model_from_entry
from stsfl.common.baseline_hazard import BaselineHazard, site_baseline_bins, time_grid
from stsfl.common.competing_risks import COMPETING, EVENT

HORIZONS = [1095.75, 1826.25]


def shifted_models(edges: np.ndarray) -> dict[str, RiskModel]:
    """A federation's models that fit another population: the site's risks on a baseline twice as
    high (dm) and a competing hazard half as high; os from its own fit."""
    train = site_risks(1500, 11)
    time, status, eta, eta_os = train.competing_arrays(1)
    dm = BaselineHazard.from_bins(site_baseline_bins(time, status == EVENT, eta, edges))
    death = BaselineHazard.from_bins(site_baseline_bins(time, status == COMPETING, eta_os, edges))
    os_ = BaselineHazard.from_bins(site_baseline_bins(train.time[:, 0], train.event[:, 0], train.log_risk[:, 0], edges))
    twice, half = (BaselineHazard(edges, f * h.cumulative) for f, h in ((2.0, dm), (0.5, death)))
    return {"os": RiskModel(1.0, os_), "dm": RiskModel(1.0, twice, ("os", 1.0, half))}


def test_the_site_recovers_its_slope_and_level_and_calibration_improves():
    edges = time_grid()
    # the network's dm log-risks at this site are twice too spread out (scale 2): slope ~0.5
    site = site_risks(900, 12, scale=2.0)
    document = recalibrate_risks(site, shifted_models(edges), edges, HORIZONS, folds=5)
    dm = document["endpoints"]["dm"]
    assert dm["slope"] == pytest.approx(0.5, abs=0.1) and dm["competing"]["slope"] == pytest.approx(1.0, abs=0.15)
    assert dm["patients"] == 900
    five = dm["calibration"]["1826.25"]
    assert abs(five["before"]["observed_expected"] - 1) > 0.2 and five["before"]["slope"] < 0.7
    assert five["after"]["observed_expected"] == pytest.approx(1.0, abs=0.1)
    assert five["after"]["slope"] == pytest.approx(1.0, abs=0.25)
    assert five["after"]["observed"] == five["before"]["observed"]  # same patients, same Aalen-Johansen
    # the document's entry gives back the fitted model
    model = model_from_entry(dm)
    assert model.slope == dm["slope"] and model.competing[0] == "os"


def test_cox_slope_matches_lifelines_and_falls_back_to_one_without_events():
    site = site_risks(400, 13)
    time, status, eta, _ = site.competing_arrays(1)
    assert cox_slope(time, status == EVENT, eta) == pytest.approx(1.0, abs=0.25)
    assert cox_slope(time, np.zeros_like(time), eta) == 1.0


def test_a_network_that_ranks_the_other_way_gets_slope_zero_and_the_site_baseline():
    from stsfl.client.prediction.recalibration import endpoint_data, fit_endpoint

    site = site_risks(600, 15, scale=-1.0)  # dm log-risks reversed at this site
    model, entry = fit_endpoint(endpoint_data(site, 1), time_grid())
    assert entry["slope"] == 0.0 and model.slope == 0.0
    risk = model.risk(site.log_risk[:, 1], site.log_risk[:, 0], 1826.25)
    # without the dm ranking, the patients differ only by the competing hazard's OS log-risk
    order = np.argsort(site.log_risk[:, 0])
    assert np.all(np.diff(risk[order]) <= 1e-12)


def test_too_few_patients_is_refused_naming_the_endpoint():
    edges = time_grid()
    with pytest.raises(Exception, match="endpoint os: 6 patients with outcomes"):
        recalibrate_risks(site_risks(6, 14), shifted_models(edges), edges, HORIZONS, folds=5)
