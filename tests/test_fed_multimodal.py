"""The multimodal task through the federation's site and server code, in one process: real tiny
site folders (NIfTI MRI, pyramidal TIFF slides, clinical.csv) -> statistics query -> combined
statistics -> two rounds of local training at two sites + FedAvg + server-side gradient blending
-> evaluation at a held-out site. (The transport is covered by tests/integration.)"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from site_builder import make_site

from stsfl.client.site_task import SiteTask
from stsfl.common.config import FederationConfig
from stsfl.common.fed_protocol import to_json
from stsfl.common.params import arrays_to_numpy, numpy_to_arrays
from stsfl.server.model_hooks import hooks_for
from stsfl.server.strategies import Aggregator

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
    hooks = hooks_for(fed)
    base = {
        "task": "multimodal",
        "preset": "cpu-small",
        "schema": to_json(hooks.schema_json()),
        "run-seed": 0,
        "validation-fraction": fed.validation_fraction,
        "federation": "mm-test",
        "recipe": to_json(fed.recipe.train.model_dump(mode="json")),
    }
    per_site = {name: task.statistics(ConfigRecord(base)) for name, task in site_tasks.items()}
    assert all(per_site[s]["counts"]["patients"] > 0 for s in SITES)
    statistics = hooks.combine_statistics(per_site)
    glob = hooks.initial_arrays(statistics, seed=0)
    start = {k: v.copy() for k, v in glob.items()}
    blend, blend_state = hooks.initial_blend_weights(), None
    assert set(blend) == {"fused", "mri", "wsi", "clinical"} and np.isclose(sum(blend.values()), 1.0)
    aggregator = Aggregator(fed)
    history = []
    for server_round in (1, 2):
        cfg = ConfigRecord(
            dict(
                base,
                **{
                    "statistics": to_json(statistics),
                    "server-round": server_round,
                    "seed": server_round,
                    "schedule-window": to_json(fed.schedule_window(server_round).model_dump()),
                    "blend-weights": to_json(blend),
                },
            )
        )
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
    cfg = ConfigRecord(
        dict(base, **{"statistics": to_json(statistics), "server-round": 2, "holdout-sites": to_json(["held_out"])})
    )
    held_out = site_tasks["held_out"].evaluate(numpy_to_arrays(glob), cfg)
    assert held_out["eval-patients"] == 6
    assert 0.0 <= held_out["c-harrell-os"] <= 1.0
    assert {"c-uno-os", "ibs-os", "eval-events-dm"} <= set(held_out)
    training = site_tasks["a"].evaluate(numpy_to_arrays(glob), cfg)
    assert np.isfinite(training["val-loss-fused"])


def test_fedbn_sites_keep_their_own_normalisation_layers(site_tasks):
    fed = FederationConfig(sites=SITES, holdout=["held_out"], strategy="fedbn", validation_fraction=0.34)
    hooks = hooks_for(fed)
    base = {
        "task": "multimodal",
        "preset": "cpu-small",
        "schema": to_json(hooks.schema_json()),
        "run-seed": 0,
        "validation-fraction": fed.validation_fraction,
        "federation": "fedbn-test",
        "keep-norm-local": True,
        "recipe": to_json(fed.recipe.train.model_dump(mode="json")),
        "schedule-window": to_json(fed.schedule_window(1).model_dump()),
        "blend-weights": to_json(hooks.initial_blend_weights()),
    }
    statistics = hooks.combine_statistics({n: t.statistics(ConfigRecord(base)) for n, t in site_tasks.items()})
    glob = hooks.initial_arrays(statistics, seed=0)
    site = site_tasks["a"]
    cfg1 = ConfigRecord(dict(base, **{"statistics": to_json(statistics), "server-round": 1, "seed": 1}))
    after1, _, _, _ = site.train(numpy_to_arrays(glob), cfg1)
    norm_weight = "encoders.mri.features.norm0.weight"
    own = arrays_to_numpy(after1)[norm_weight]
    # The server sends normalisation weights the site never had: the site must ignore them.
    foreign = dict(glob, **{norm_weight: np.full_like(own, 5.0)})
    cfg2 = ConfigRecord(dict(base, **{"statistics": to_json(statistics), "server-round": 2, "seed": 2}))
    after2 = arrays_to_numpy(site.train(numpy_to_arrays(foreign), cfg2)[0])[norm_weight]
    assert np.abs(after2 - own).max() < 0.5 < np.abs(after2 - 5.0).min()
    # Cross-site validation: the global model takes the site's own layers of the round (as at every
    # evaluation); another site's local model is evaluated with the layers it was sent with.
    cfg_eval = ConfigRecord(dict(base, **{"statistics": to_json(statistics), "server-round": 2}))
    cross = site.cross_evaluate({"global": numpy_to_arrays(foreign), "local-b": numpy_to_arrays(foreign)}, cfg_eval)
    assert cross["global"] == site.evaluate(numpy_to_arrays(foreign), cfg_eval)
    assert cross["global"]["val-loss-fused"] != cross["local-b"]["val-loss-fused"]


def test_baseline_query_pools_the_training_sites_bins(site_tasks):
    """The baseline phase in one process: training sites bin their events and risk sums on the
    federation's grid; the server's pooled baseline counts every event and matches the pooled
    Breslow estimate of the same model on the exact grid within the coarsening error."""
    from stsfl.server.baseline_phase import baseline_query_config, combine_baseline_replies

    fed = FederationConfig(sites=SITES, holdout=["held_out"], validation_fraction=0.34)
    hooks = hooks_for(fed)
    base = {
        "task": "multimodal",
        "preset": "cpu-small",
        "schema": to_json(hooks.schema_json()),
        "run-seed": 0,
        "validation-fraction": fed.validation_fraction,
        "federation": "baseline-test",
        "server-round": 1,
        "recipe": to_json(fed.recipe.train.model_dump(mode="json")),
    }
    statistics = hooks.combine_statistics({n: t.statistics(ConfigRecord(base)) for n, t in site_tasks.items()})
    glob = numpy_to_arrays(hooks.initial_arrays(statistics, seed=0))
    cfg = ConfigRecord(dict(base, statistics=to_json(statistics), **baseline_query_config(fed)))
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
