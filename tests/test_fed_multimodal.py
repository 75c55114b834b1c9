"""The multimodal task through the federation's site and server code, in one process: real tiny
site folders (NIfTI MRI, pyramidal TIFF slides, clinical.csv) -> statistics query -> combined
statistics -> two rounds of local training at two sites + FedAvg + server-side gradient blending
-> evaluation at a held-out site. (The transport is covered by tests/integration.)"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from fed_messages import round_config, run_config
from flwr.app import MetricRecord, RecordDict
from site_builder import make_site

from stsfl.client.federation.site_task import SiteTask
from stsfl.common.config import FederationConfig
from stsfl.common.messages import BaselineQuery, CrossEvaluateConfig
from stsfl.common.params import arrays_to_numpy, numpy_to_arrays
from stsfl.common.tasks import server_side
from stsfl.server.federation.strategies import Aggregator

SITES = ["a", "b", "held_out"]


@pytest.fixture(scope="module")
def site_tasks(tmp_path_factory) -> dict[str, SiteTask]:
    tasks = {}
    for i, name in enumerate(SITES):
        site_yaml = make_site(tmp_path_factory.mktemp(name), n=6, slides=(i != 1))
        data = yaml.safe_load(site_yaml.read_text())
        site_yaml.write_text(yaml.safe_dump({**data, "name": name}))
        tasks[name] = SiteTask.from_node_config(name, str(site_yaml))
    return tasks


def test_two_rounds_with_blending_and_holdout_evaluation(site_tasks):
    fed = FederationConfig(
        sites=SITES,
        holdout=["held_out"],
        strategy="fedavg",
        weighting="patients",
        validation_fraction=0.34,
        rounds=2,
        train={"epochs_per_round": 2},
    )
    hooks = server_side(fed)
    run = run_config(fed, federation="mm-test")
    per_site = {name: task.statistics(run) for name, task in site_tasks.items()}
    assert all(per_site[s]["counts"]["patients"] > 0 for s in SITES)
    statistics = hooks.combine_statistics(per_site)
    glob = hooks.initial_arrays(statistics, seed=0)
    start = {k: v.copy() for k, v in glob.items()}
    blend, blend_state = hooks.initial_blend_weights(), None
    assert set(blend) == {"fused", "mri", "wsi", "clinical"} and np.isclose(sum(blend.values()), 1.0)
    aggregator = Aggregator(fed)
    history = []
    for server_round in (1, 2):
        cfg = round_config(fed, statistics, server_round, run=run, blend_weights=blend)
        replies, stats = [], {}
        for name in fed.training_sites:
            arrays, metrics, blend_stats, _ = site_tasks[name].train(numpy_to_arrays(glob), cfg)
            assert {"train-loss-fused", "val-loss-fused", "num-patients", "num-events"} <= set(metrics)
            replies.append(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}))
            stats[name] = blend_stats
        new, _ = aggregator.aggregate(server_round, numpy_to_arrays(glob), replies)
        glob = arrays_to_numpy(new)
        blend, blend_state = hooks.update_blend(server_round, stats, blend_state)
        history.append(blend_state["history"])
    assert len(history[-1]) >= 1 and blend_state["last"] is not None
    moved = [k for k in glob if glob[k].dtype.kind == "f" and not np.allclose(glob[k], start[k])]
    assert moved, "two rounds of training must change the global weights"
    cfg = round_config(fed, statistics, 2, run=run)
    held_out = site_tasks["held_out"].evaluate(numpy_to_arrays(glob), cfg)
    assert held_out["eval-patients"] == 6
    assert 0.0 <= held_out["c-harrell-os"] <= 1.0
    assert {"c-uno-os", "ibs-os", "eval-events-dm"} <= set(held_out)
    training = site_tasks["a"].evaluate(numpy_to_arrays(glob), cfg)
    assert np.isfinite(training["val-loss-fused"])


def test_fedbn_sites_keep_their_own_normalisation_layers(site_tasks):
    fed = FederationConfig(sites=SITES, holdout=["held_out"], strategy="fedbn", validation_fraction=0.34)
    hooks = server_side(fed)
    run = run_config(fed, federation="fedbn-test")
    fedbn = {"run": run, "keep_norm_local": True, "blend_weights": hooks.initial_blend_weights()}
    statistics = hooks.combine_statistics({n: t.statistics(run) for n, t in site_tasks.items()})
    glob = hooks.initial_arrays(statistics, seed=0)
    site = site_tasks["a"]
    cfg1 = round_config(fed, statistics, 1, schedule_window=fed.schedule_window(1), **fedbn)
    after1, _, _, _ = site.train(numpy_to_arrays(glob), cfg1)
    norm_weight = "encoders.mri.features.norm0.weight"
    own = arrays_to_numpy(after1)[norm_weight]
    # The server sends normalisation weights the site never had: the site must ignore them.
    foreign = dict(glob, **{norm_weight: np.full_like(own, 5.0)})
    cfg2 = round_config(fed, statistics, 2, schedule_window=fed.schedule_window(1), **fedbn)
    after2 = arrays_to_numpy(site.train(numpy_to_arrays(foreign), cfg2)[0])[norm_weight]
    assert np.abs(after2 - own).max() < 0.5 < np.abs(after2 - 5.0).min()
    # Cross-site validation: the global model takes the site's own layers of the round (as at every
    # evaluation); another site's local model is evaluated with the layers it was sent with.
    cfg_eval = round_config(fed, statistics, 2, **fedbn)
    cross_cfg = CrossEvaluateConfig(round=cfg_eval, global_model="global")
    cross = site.cross_evaluate({"global": numpy_to_arrays(foreign), "local-b": numpy_to_arrays(foreign)}, cross_cfg)
    assert cross["global"] == site.evaluate(numpy_to_arrays(foreign), cfg_eval)
    assert cross["global"]["val-loss-fused"] != cross["local-b"]["val-loss-fused"]


def test_baseline_query_pools_the_training_sites_bins(site_tasks):
    """The baseline phase in one process: training sites bin their events and risk sums on the
    federation's grid; the server's pooled baseline counts every event and matches the pooled
    Breslow estimate of the same model on the exact grid within the coarsening error."""
    from stsfl.server.phases.baseline_phase import combine_baseline_replies, grid_settings

    fed = FederationConfig(sites=SITES, holdout=["held_out"], validation_fraction=0.34)
    hooks = server_side(fed)
    run = run_config(fed, federation="baseline-test")
    statistics = hooks.combine_statistics({n: t.statistics(run) for n, t in site_tasks.items()})
    glob = numpy_to_arrays(hooks.initial_arrays(statistics, seed=0))
    cfg = BaselineQuery(round=round_config(fed, statistics, 1, run=run), grid=grid_settings(fed))
    replies = {name: site_tasks[name].baseline(glob, cfg) for name in fed.training_sites}
    assert all(r["patients"] == 6 for r in replies.values())
    document = combine_baseline_replies(replies, fed, model_round=1)
    assert document["sites"] == ["a", "b"]
    for name, entry in document["endpoints"].items():
        events = sum(int(sum(r["endpoints"][name]["bins"]["events"])) for r in replies.values())
        assert entry["events"] == events and sum(entry["risk_histogram"]) == 12
        cumulative = np.asarray(entry["pooled"]["cumulative"])
        assert np.all(np.diff(cumulative) >= 0) and (cumulative[-1] > 0) == (events > 0)
        assert set(entry["per_site"]) == {"a", "b"}
