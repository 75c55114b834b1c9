"""Federated == centralised, on real data (TCGA-BRCA regions as sites, clinical-only linear Cox).

- One site, FedAvg, one full-batch gradient-descent step per round gives the same weights as
  centralised gradient descent on that site (to float tolerance).
- Three sites, FedAvg weighted by events: the same as gradient descent on the pooled Cox model
  stratified by centre (why we weight by events: stsfl.server.strategies).
- The federated feature statistics equal the pooled ones.
The client side runs through `SiteTask.train` and the server step through `Aggregator`: the code
the ClientApp and ServerApp run, without the transport.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from stsfl.client.linear_cox_site import LinearCoxSite, fit_pooled
from stsfl.client.site_task import SiteTask
from stsfl.client.tcga_brca import write_region_sites
from stsfl.common.config import FederationConfig
from stsfl.common.fed_protocol import to_json
from stsfl.common.linear_cox import build_linear_cox
from stsfl.common.moments import combine_moments
from stsfl.common.params import arrays_to_numpy, numpy_to_arrays, state_dict_to_arrays
from stsfl.server.strategies import Aggregator

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


def _federated(yamls, rounds: int) -> dict[str, np.ndarray]:
    tasks = _tasks(yamls)
    base = ConfigRecord({"task": "linear-cox", "run-seed": SEED, "federation": "eq"})
    statistics, _ = _statistics(tasks, base)
    fed = FederationConfig(sites=[t.name for t in tasks], strategy="fedavg", weighting="events")
    aggregator = Aggregator(fed)
    glob = state_dict_to_arrays(build_linear_cox(len(statistics["mean"]), SEED).state_dict())
    for server_round in range(1, rounds + 1):
        cfg = ConfigRecord(dict(base, **{
            "statistics": to_json(statistics), "server-round": server_round, "seed": SEED + server_round,
            "local-epochs": 1, "learning-rate": LR, "client-optimizer": "sgd", "prox-mu": 0.0,
        }))
        replies = []
        for task in tasks:
            arrays, metrics, _ = task.train(glob, cfg)
            replies.append(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}))
        glob, _ = aggregator.aggregate(server_round, glob, replies)
    return arrays_to_numpy(glob)


def _centralised(yamls, rounds: int) -> dict[str, np.ndarray]:
    """Gradient descent on sum_k events_k * mean Cox loss_k / sum_k events_k (stratified by site)."""
    sites = [LinearCoxSite(p.parent / p.stem / "clinical.csv", SEED) for p in yamls]
    statistics = combine_moments([s.statistics()["moments"] for s in sites])
    model = fit_pooled(sites, statistics, steps=rounds, lr=LR, seed=SEED)
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


def test_federated_statistics_equal_pooled(region_sites):
    tasks = _tasks(region_sites)
    statistics, per_site = _statistics(tasks, ConfigRecord({"task": "linear-cox", "run-seed": SEED}))
    pooled = np.concatenate([LinearCoxSite(p.parent / p.stem / "clinical.csv", SEED).train.x.double().numpy() for p in region_sites])
    np.testing.assert_allclose(statistics["mean"], pooled.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(statistics["std"], np.where(pooled.std(axis=0) > 1e-12, pooled.std(axis=0), 1.0), rtol=1e-7)
    assert sum(s["counts"]["patients"] for s in per_site) == len(pooled)
