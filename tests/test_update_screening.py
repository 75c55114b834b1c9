"""A site update with NaN/inf, of the wrong shape or absurdly large is rejected and logged (site and
round), not averaged: `screen_updates` on its own, then in a whole in-process federation on the
TCGA-BRCA region sites where one site's train reply is poisoned."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)

from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.fed_protocol import ARRAYS
from stsfl.common.params import arrays_to_numpy, numpy_to_arrays
from stsfl.server.federation.strategies import screen_updates


def _model(rng, scale=1.0) -> dict[str, np.ndarray]:
    return {
        "fc.weight": (scale * rng.normal(size=(1, 4))).astype(np.float32),
        "fc.bias": np.zeros(1, np.float32),
        "norm.num_batches_tracked": np.array(3, np.int64),
    }


def test_screen_updates_names_each_bad_site():
    rng = np.random.default_rng(0)
    glob = _model(rng)
    step = lambda s: {
        k: (v + s * rng.normal(size=v.shape)).astype(v.dtype) if v.dtype.kind == "f" else v  # noqa: E731
        for k, v in glob.items()
    }
    updates = {name: step(0.01) for name in ("a", "b", "c")}
    updates["nan"] = {**step(0.01), "fc.bias": np.array([np.nan], np.float32)}
    updates["inf"] = {**step(0.01), "fc.weight": np.full((1, 4), np.inf, np.float32)}
    updates["huge"] = step(1e4)
    updates["shape"] = {**step(0.01), "fc.weight": np.zeros((2, 4), np.float32)}
    rejected = screen_updates(numpy_to_arrays(glob), {k: numpy_to_arrays(v) for k, v in updates.items()}, 100.0)
    assert sorted(rejected) == ["huge", "inf", "nan", "shape"]
    assert "fc.bias" in rejected["nan"] and "NaN/inf" in rejected["inf"] and "100 x" in rejected["huge"]
    assert "shapes" in rejected["shape"]
    # Two sites that both moved a little, or a single site: nothing to reject.
    assert screen_updates(numpy_to_arrays(glob), {k: numpy_to_arrays(updates[k]) for k in ("a", "b")}, 100.0) == {}
    assert screen_updates(numpy_to_arrays(glob), {"a": numpy_to_arrays(updates["huge"])}, 100.0) == {}
    # Others that barely moved (1e-9) give no scale: a larger yet ordinary update (a DP site's noise) is kept,
    # an update as large as 1000 x the model is not.
    still = {"a": step(1e-9), "b": step(1e-9)}
    assert (
        screen_updates(numpy_to_arrays(glob), {k: numpy_to_arrays(v) for k, v in {**still, "dp": step(1e-2)}.items()}, 100.0)
        == {}
    )
    assert list(
        screen_updates(numpy_to_arrays(glob), {k: numpy_to_arrays(v) for k, v in {**still, "bad": step(1e3)}.items()}, 100.0)
    ) == ["bad"]


class PoisoningGrid(InProcessGrid):
    """The in-process grid; the train reply of `site` in the first round gets `poison` applied."""

    def __init__(self, site_yamls, site: str, poison):
        super().__init__(site_yamls)
        self.target, self.poison, self.done = site, poison, False

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        replies = super().send_and_receive(messages, timeout=timeout)
        for msg, reply in zip(messages, replies):
            node_site = self.node_config[msg.metadata.dst_node_id]["site-name"]
            if msg.metadata.message_type == "train" and node_site == self.target and not self.done:
                self.done = True
                reply.content[ARRAYS] = numpy_to_arrays(self.poison(arrays_to_numpy(reply.content[ARRAYS])))
        return replies


@pytest.mark.parametrize(
    "poison, reason",
    [
        (lambda a: {k: np.full_like(v, np.nan) for k, v in a.items()}, "NaN/inf"),
        (lambda a: {k: v * 1e6 for k, v in a.items()}, "update norm"),
    ],
    ids=["nan", "huge"],
)
def test_a_poisoned_update_is_rejected_and_the_run_completes(tcga_brca_dir, tmp_path, capsys, server_identity, poison, reason):
    sites = {p.stem: p for p in write_region_sites(tcga_brca_dir, tmp_path / "regions", regions=[0, 1, 3])}
    config = tmp_path / "federation.yaml"
    config.write_text(
        "task: linear-cox\nname: poison\nrounds: 2\ntrain: {epochs_per_round: 5, lr: 0.05, seed: 3}\n"
        "sites: [region_0, region_1, region_3]\nholdout: [region_3]\nprediction: {baseline: false}\n"
    )
    summary = run_in_process(PoisoningGrid(sites, "region_1", poison), config, tmp_path / "results")
    out = capsys.readouterr().out
    assert "round 1: update of site region_1 rejected, not averaged: " in out and reason in out, out
    rounds = [json.loads(line) for line in (tmp_path / "results" / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["sites_train"] == ["region_0"] and "region_1" in rounds[0]["sites_failed"]
    assert rounds[1]["sites_train"] == ["region_0", "region_1"], "the site takes part again in the next round"
    with np.load(tmp_path / "results" / "model_final.npz") as final:
        assert all(np.isfinite(final[k]).all() for k in final.files)
    assert 0.0 < summary["holdout_selected"]["region_3"]["c-harrell-os"] < 1.0
