"""Slide-bag features standardised with federation-wide statistics: per-site tile sums pool to the
mean / std of all training tiles, the server writes them into the WSI sub-network's buffers
before round 1, and the attention pooling sees standardised tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from site_builder import make_site

from stsfl.common.bag_stats import combine_bag_sums, site_bag_sums
from stsfl.common.clinical_stats import GlobalClinicalStats
from stsfl.common.config import FederationConfig, SiteConfig, load_config, load_preset, load_schema
from stsfl.common.tasks import server_side
from stsfl.common.wsi_net import GatedAttentionMil
from stsfl.tasks.multimodal.site import MultimodalSite


def test_site_sums_pool_to_the_statistics_of_all_tiles():
    rng = np.random.default_rng(0)
    bags = [rng.normal(3.0, 2.0, (n, 4)) * [1, 10, 0.01, 0] for n in (5, 9, 2)]
    mean, std = combine_bag_sums([site_bag_sums(bags[:2], 4), site_bag_sums(bags[2:], 4), site_bag_sums([], 4)], 4)
    tiles = np.concatenate(bags)
    np.testing.assert_allclose(mean, tiles.mean(0), atol=1e-12)
    np.testing.assert_allclose(std[:3], tiles.std(0)[:3], rtol=1e-9)
    assert std[3] == 1.0  # a constant feature is left unscaled
    assert [a.tolist() for a in combine_bag_sums([site_bag_sums([], 2)], 2)] == [[0.0, 0.0], [1.0, 1.0]]


def test_attention_pooling_sees_standardised_tiles():
    cfg = load_preset("cpu-small").wsi
    torch.manual_seed(0)
    net = GatedAttentionMil(cfg).eval()
    bag, mask = torch.randn(2, 5, cfg.embed_dim) * 50 + 7, torch.ones(2, 5, dtype=torch.bool)
    mean, std = bag.mean((0, 1)), bag.std((0, 1))
    raw = net(((bag - mean) / std), mask)
    net.bag_mean.copy_(mean)
    net.bag_std.copy_(std)
    torch.testing.assert_close(net(bag, mask), raw)
    assert {"bag_mean", "bag_std"} <= set(net.state_dict())  # buffers: they travel with the weights


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    out = {}
    for name, n in (("a", 2), ("b", 1), ("held_out", 3)):  # the held-out site's third slide must not count
        root = tmp_path_factory.mktemp(name)
        site_yaml = make_site(root, n=n)
        site_yaml.write_text(yaml.safe_dump(yaml.safe_load(site_yaml.read_text()) | {"name": name}))
        out[name] = MultimodalSite(load_config(site_yaml, SiteConfig), site_yaml, "cpu-small", load_schema(), 0, 0.0)
    return out


def test_server_writes_the_training_sites_statistics_into_the_initial_model(sites):
    hooks = server_side(FederationConfig(sites=list(sites), holdout=["held_out"]))
    statistics = hooks.combine_statistics({name: site.statistics() for name, site in sites.items()})
    GlobalClinicalStats.from_dict(statistics)  # the clinical statistics the sites read are unchanged
    arrays = hooks.initial_arrays(statistics, seed=0)
    tiles = np.concatenate(
        [
            site.prepared.cache.load("wsi", p.wsi_key, ["bag"])["bag"]
            for name in ("a", "b")
            for site in [sites[name]]
            for p in site.prepared.patients
            if p.wsi_key is not None
        ]
    )
    np.testing.assert_allclose(arrays["encoders.wsi.bag_mean"], tiles.mean(0), rtol=1e-5, atol=1e-6)
    varying = tiles.std(0) > 1e-6
    np.testing.assert_allclose(arrays["encoders.wsi.bag_std"][varying], tiles.std(0)[varying], rtol=1e-4)
    assert varying.sum() >= 8  # the morphometry of the test slides varies in most features
