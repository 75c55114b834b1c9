"""Federated == centralised, on real data (TCGA-BRCA regions as sites, clinical-only linear Cox).

- One site, FedAvg, one full-batch gradient-descent step per round gives the same weights as
  centralised gradient descent on that site (to float tolerance).
- Three sites, FedAvg weighted by events: the same as gradient descent on the pooled Cox model
  stratified by centre (why we weight by events: stsfl.server.federation.strategies).
- With `train.schedule: warmup_cosine`, each round's sites continue the run's one schedule, and the
  one-site federation equals gradient descent whose steps follow FederationConfig.learning_rate_at.
- The federated feature statistics equal the pooled ones.
- With a ridge penalty (`l2_penalty`), FedAvg converges to the penalised optimum that lifelines'
  CoxPHFitter(penalizer, l1_ratio=0, strata=site) finds on the pooled rows.
The client side runs through `SiteTask.train` and the server step through `Aggregator`: the code
the ClientApp and ServerApp run, without the transport.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fed_messages import round_config, run_config
from flwr.app import MetricRecord, RecordDict
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)
from lifelines import CoxPHFitter

from stsfl.client.federation.site_task import SiteTask
from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.config import FederationConfig
from stsfl.common.moments import combine_moments
from stsfl.common.params import arrays_to_numpy, state_dict_to_arrays
from stsfl.server.federation.strategies import Aggregator
from stsfl.tasks.linear_cox.model import build_linear_cox
from stsfl.tasks.linear_cox.site import VALIDATION_FRACTION, LinearCoxSite, fit_pooled

LR, SEED = 0.5, 3


@pytest.fixture(scope="module")
def region_sites(tcga_brca_dir, tmp_path_factory):
    return write_region_sites(tcga_brca_dir, tmp_path_factory.mktemp("tcga"), regions=[0, 1, 2])


def _tasks(yamls):
    return [SiteTask.from_node_config(p.stem, str(p)) for p in yamls]


def _statistics(tasks, cfg):
    per_site = [t.statistics(cfg) for t in tasks]
    combined = combine_moments([s["moments"] for s in per_site])
    return combined, per_site


def _federated(yamls, rounds: int, lr: float = LR, l2: float = 0.0) -> dict[str, np.ndarray]:
    tasks = _tasks(yamls)
    fed = FederationConfig(
        sites=[t.name for t in tasks],
        task="linear-cox",
        strategy="fedavg",
        weighting="events",
        l2_penalty=l2,
        rounds=rounds,
        train={"lr": lr, "seed": SEED},
    )
    run = run_config(fed, federation="eq")
    statistics, _ = _statistics(tasks, run)
    aggregator = Aggregator(fed)
    glob = state_dict_to_arrays(build_linear_cox(len(statistics["mean"]), SEED).state_dict())
    for server_round in range(1, rounds + 1):
        cfg = round_config(fed, statistics, server_round, run=run)
        replies = []
        for task in tasks:
            arrays, metrics, _, _ = task.train(glob, cfg)
            replies.append(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}))
        glob, _ = aggregator.aggregate(server_round, glob, replies)
    return arrays_to_numpy(glob)


def _centralised(yamls, rounds: int, lr: float | list[float] = LR) -> dict[str, np.ndarray]:
    """Gradient descent on sum_k events_k * mean Cox loss_k / sum_k events_k (stratified by site)."""
    sites = [LinearCoxSite(p.parent / p.stem / "clinical.csv", SEED) for p in yamls]
    statistics = combine_moments([s.statistics()["moments"] for s in sites])
    model = fit_pooled(sites, statistics, steps=rounds, lr=lr, seed=SEED)
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("regions", [[0], [0, 1, 2]], ids=["one-site", "three-sites-stratified"])
def test_fedavg_full_batch_gd_equals_centralised(region_sites, regions):
    yamls = [region_sites[r] for r in regions]
    fed = _federated(yamls, rounds=3)
    cen = _centralised(yamls, rounds=3)
    start = build_linear_cox(39, SEED).state_dict()
    assert not np.allclose(cen["fc.weight"], start["fc.weight"].numpy()), "training must move the weights"
    for name in cen:  # (the bias has no Cox gradient: it stays where it started on both sides)
        np.testing.assert_allclose(fed[name], cen[name], rtol=1e-5, atol=1e-6)


def test_a_decaying_learning_rate_reaches_the_sites_round_by_round(region_sites, tmp_path, server_identity):
    """The real orchestrator and ClientApp (in process), one site, one full-batch SGD step per round:
    the run is gradient descent with the cosine schedule's step sizes, not with the constant rate."""
    config = tmp_path / "federation.yaml"
    config.write_text(
        f"task: linear-cox\nname: decay\nsites: [region_0]\nrounds: 3\n"
        f"train: {{lr: {LR}, schedule: warmup_cosine, warmup_fraction: 0, final_lr_fraction: 0.2, seed: {SEED}}}\n"
        f"validation_fraction: {VALIDATION_FRACTION}\n"
        "prediction: {baseline: false}\nsite_outputs: {enabled: false}\n"
    )
    run_in_process(InProcessGrid({"region_0": region_sites[0]}), config, tmp_path / "results")
    rates = [json.loads(line)["learning_rate"] for line in (tmp_path / "results" / "rounds.jsonl").read_text().splitlines()]
    assert rates == pytest.approx([LR, LR * 0.6, LR * 0.2])  # cosine from 1 to 0.2 of the rate: 0.6 half-way
    with np.load(tmp_path / "results" / "model_final.npz") as federated:
        decayed, constant = _centralised([region_sites[0]], 3, rates), _centralised([region_sites[0]], 3)
        assert not np.allclose(decayed["fc.weight"], constant["fc.weight"], rtol=1e-3)
        for name in decayed:
            np.testing.assert_allclose(federated[name], decayed[name], rtol=1e-5, atol=1e-6)


def test_federated_statistics_equal_pooled(region_sites):
    tasks = _tasks(region_sites)
    fed = FederationConfig(sites=[t.name for t in tasks], task="linear-cox")
    statistics, per_site = _statistics(tasks, run_config(fed, run_seed=SEED))
    pooled = np.concatenate(
        [LinearCoxSite(p.parent / p.stem / "clinical.csv", SEED).train.x.double().numpy() for p in region_sites]
    )
    np.testing.assert_allclose(statistics["mean"], pooled.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(statistics["std"], np.where(pooled.std(axis=0) > 1e-12, pooled.std(axis=0), 1.0), rtol=1e-7)
    assert sum(s["counts"]["patients"] for s in per_site) == len(pooled)


def test_federated_ridge_optimum_equals_lifelines(region_sites):
    """FedAvg, one full-batch step per round, l2 = 1: the federated optimum is lifelines' penalised,
    site-stratified Cox fit. Our objective is nll / events + l2/2 ||beta||^2; lifelines' is nll +
    n x penalizer/2 ||beta_s||^2 on its own standardisation beta_s = beta x std (ddof 1), which for
    columns we standardised (population std 1) is sqrt(n / (n - 1)): penalizer = l2 x events (n - 1) / n^2."""
    l2 = 1.0
    fed = _federated(region_sites, rounds=60, lr=0.3, l2=l2)["fc.weight"].reshape(-1)
    sites = [LinearCoxSite(p.parent / p.stem / "clinical.csv", SEED) for p in region_sites]
    statistics = combine_moments([s.statistics()["moments"] for s in sites])
    frame = pd.concat(
        [
            pd.DataFrame(LinearCoxSite._standardise(s.train, statistics).numpy().astype(np.float64)).assign(
                T=s.train.time.numpy(), E=s.train.event.numpy(), site=k
            )
            for k, s in enumerate(sites)
        ],
        ignore_index=True,
    )
    varying = [c for c in range(fed.size) if frame[c].std() > 1e-9]  # lifelines cannot scale constant columns
    n, events = len(frame), int(frame["E"].sum())
    cph = CoxPHFitter(penalizer=l2 * events * (n - 1) / n**2, l1_ratio=0.0)
    cph.fit(frame[[*varying, "T", "E", "site"]], duration_col="T", event_col="E", strata=["site"])
    np.testing.assert_allclose(fed[varying], cph.params_.to_numpy(), atol=1e-3)
    assert np.abs(fed[varying]).max() > 0.05, "the penalised optimum must not be trivially zero"
    np.testing.assert_allclose(np.delete(fed, varying), 0.0, atol=1e-3)  # no data gradient: the penalty zeroes them
