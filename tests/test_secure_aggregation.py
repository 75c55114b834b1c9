"""Secure aggregation (Flower's SecAgg+ stages driven by our orchestrator, the client side Flower's
`secaggplus_mod`): whole in-process federations on the TCGA-BRCA region sites through the real
ClientApp. The coordinator must end with the plain run's model (to quantization error) while no
train reply carries a site's weights; a site that drops out after sharing its keys is unmasked
from the others' shares, and one whose update is not finite refuses to send it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)

from stsfl.client.federation.site_task import SiteTask
from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.config import ConfigError, FederationConfig, load_config
from stsfl.common.fed_protocol import ARRAYS
from stsfl.common.params import arrays_to_numpy, numpy_to_arrays
from stsfl.server.federation.secure_aggregation import threshold

BODY = (
    "task: linear-cox\nrounds: 2\ntrain: {{epochs_per_round: 3, lr: 0.05, seed: 5}}\nstrategy: {strategy}\n"
    "sites: [region_0, region_1, region_2, region_3]\nholdout: [region_3]\nprediction: {{baseline: false}}\n"
    "site_outputs: {{enabled: false}}\n"
)


@pytest.fixture(scope="module")
def region_sites(tcga_brca_dir, tmp_path_factory):
    paths = write_region_sites(tcga_brca_dir, tmp_path_factory.mktemp("regions"), regions=[0, 1, 2, 3])
    return {p.stem: p for p in paths}


def _run(sites, tmp_path, name, body, grid=None):
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"name: {name}\n{body}")
    grid = grid or InProcessGrid(sites)
    summary = run_in_process(grid, config, tmp_path / name)
    with np.load(tmp_path / name / "model_final.npz") as final:
        model = {k: final[k] for k in final.files}
    return summary, model, grid


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_secure_rounds_end_with_the_plain_model_and_no_weights_leave(region_sites, tmp_path, server_identity, strategy):
    body = BODY.format(strategy=strategy)
    _, plain, _ = _run(region_sites, tmp_path, "plain", body)
    summary, secure, grid = _run(region_sites, tmp_path, "secure", body + "secure_aggregation: {enabled: true}\n")
    assert plain.keys() == secure.keys()
    for name in plain:  # stochastic quantization at 2^22 levels over +-8, weights ~ events / (patients)
        np.testing.assert_allclose(secure[name], plain[name], rtol=0, atol=2e-4 if strategy == "fedavg" else 2e-3)
    assert any(np.abs(secure[k] - plain[k]).max() > 0 for k in plain), "the sum went through quantization"
    stages = [
        r.content.config_records[RECORD_KEY_CONFIGS] for r in grid.replies if RECORD_KEY_CONFIGS in r.content.config_records
    ]
    assert len(stages) == 2 * 4 * 3, "2 rounds x 4 SecAgg+ stages x 3 training sites"
    train_replies = [r for r in grid.replies if r.metadata.message_type == "train"]
    assert not any(
        ARRAYS in r.content.array_records or any(len(a) for a in r.content.array_records.values()) for r in train_replies
    ), "no train reply carries arrays in the clear"
    masked = [c for c in stages if Key.MASKED_PARAMETERS in c]
    assert len(masked) == 2 * 3 and all(len(c[Key.MASKED_PARAMETERS]) == 1 + len(plain) for c in masked)
    rounds = [json.loads(line) for line in (tmp_path / "secure" / "rounds.jsonl").read_text().splitlines()]
    assert all(r["sites_train"] == ["region_0", "region_1", "region_2"] for r in rounds)
    assert rounds[0]["train_sites"]["region_0"]["bytes-up"] > rounds[0]["float32_bytes"], "masked int64 vectors"
    assert 0.0 < summary["holdout_final"]["region_3"]["c-harrell-os"] < 1.0


class DiesWhenAskedToTrain(InProcessGrid):
    """The in-process grid where `site` dies when it is asked to train: in a plain round at the train
    message, under SecAgg+ at the collect-masked-vectors stage (after it sent its key shares)."""

    def __init__(self, site_yamls, site: str):
        super().__init__(site_yamls)
        self.node = next(n for n, cfg in self.node_config.items() if cfg["site-name"] == site)
        self.dead = False

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for msg in messages:
            stage = msg.content.config_records.get(RECORD_KEY_CONFIGS, {}).get(Key.STAGE, Stage.COLLECT_MASKED_VECTORS)
            if (
                msg.metadata.dst_node_id == self.node
                and msg.metadata.message_type == "train"
                and stage == Stage.COLLECT_MASKED_VECTORS
            ):
                self.dead = True
        alive = [m for m in messages if not (self.dead and m.metadata.dst_node_id == self.node)]
        return super().send_and_receive(alive, timeout=timeout)


def test_a_site_that_drops_after_sharing_keys_is_unmasked_from_the_others_shares(region_sites, tmp_path, server_identity):
    body = BODY.format(strategy="fedavg").replace("rounds: 2", "rounds: 1")
    _, plain, _ = _run(region_sites, tmp_path, "plain", body, DiesWhenAskedToTrain(region_sites, "region_2"))
    _, secure, _ = _run(
        region_sites,
        tmp_path,
        "secure",
        body + "secure_aggregation: {enabled: true}\n",
        DiesWhenAskedToTrain(region_sites, "region_2"),
    )
    for name in plain:
        np.testing.assert_allclose(secure[name], plain[name], rtol=0, atol=2e-4)
    rounds = [json.loads(line) for line in (tmp_path / "secure" / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["sites_train"] == ["region_0", "region_1"] and list(rounds[0]["sites_failed"]) == ["region_2"]


def test_a_site_with_a_non_finite_update_refuses_to_send_it_and_the_round_goes_on(
    region_sites, tmp_path, server_identity, monkeypatch
):
    train = SiteTask.train

    def diverged_at_region_2(self, arrays, cfg):
        new_arrays, *rest = train(self, arrays, cfg)
        if self.name == "region_2":
            new_arrays = numpy_to_arrays({k: np.full_like(v, np.nan) for k, v in arrays_to_numpy(new_arrays).items()})
        return (new_arrays, *rest)

    monkeypatch.setattr(SiteTask, "train", diverged_at_region_2)
    body = BODY.format(strategy="fedavg").replace("rounds: 2", "rounds: 1")
    _, secure, _ = _run(region_sites, tmp_path, "secure", body + "secure_aggregation: {enabled: true}\n")
    rounds = [json.loads(line) for line in (tmp_path / "secure" / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["sites_train"] == ["region_0", "region_1"]
    assert "site region_2: the local update has non-finite values" in rounds[0]["sites_failed"]["region_2"]
    # region_2's pairwise masks came out of the sum: the round is the plain one without region_2
    monkeypatch.setattr(SiteTask, "train", train)
    _, plain, _ = _run(region_sites, tmp_path, "plain", body, DiesWhenAskedToTrain(region_sites, "region_2"))
    for name in plain:
        np.testing.assert_allclose(secure[name], plain[name], rtol=0, atol=2e-4)


def test_secure_aggregation_refuses_what_would_reveal_one_site(tmp_path):
    config = tmp_path / "f.yaml"
    config.write_text("sites: [a, b, c]\nholdout: [c]\nsecure_aggregation: {enabled: true}\ncross_site: {enabled: true}\n")
    with pytest.raises(ConfigError, match="cross-site validation sends every site's fine-tuned model"):
        load_config(config, FederationConfig)
    config.write_text("sites: [a, b]\nholdout: [b]\nsecure_aggregation: {enabled: true}\n")
    with pytest.raises(ConfigError, match="at least 2 training sites"):
        load_config(config, FederationConfig)
    assert [threshold(n, 0.66) for n in (2, 3, 4, 6)] == [2, 2, 3, 4]
