"""Secure aggregation on real processes (SuperLink + 3 SuperNodes on loopback, TCGA-BRCA regions 0
and 1 train, 3 held out): the four SecAgg+ stages run through the SuperNodes, whose Context keeps
each site's keys between its ClientApp processes, and the coordinator ends with the model that the
same round averaged in the clear gives (computed in this process), to quantization error."""

from __future__ import annotations

import numpy as np
import pytest
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)

from .conftest import wait_until
from .test_federation_processes import TRAINING, _history

pytestmark = pytest.mark.integration

BODY = """holdout: [region_3]
strategy: fedavg
rounds: 1
train: {epochs_per_round: 3, lr: 0.05, seed: 11}
round_timeout_s: 120
wait_for_sites_s: 90
prediction: {baseline: false}
site_outputs: {enabled: false}
"""


def test_secure_round_on_real_processes_ends_with_the_plain_model(federation, region_site_yamls, tmp_path, server_identity):
    config = federation.write_federation("secagg", BODY + "secure_aggregation: {enabled: true}\n")
    results = federation.root / "results"
    server = federation.spawn_server("--config", str(config), "--results", str(results))
    log = federation.server_log(server)
    wait_until(lambda: server.poll() is not None, 400, "the federation to finish")
    assert server.returncode == 0, log.read_text()[-3000:]
    plain_config = tmp_path / "plain.yaml"
    plain_config.write_text(config.read_text().replace("secure_aggregation: {enabled: true}\n", ""))
    run_in_process(InProcessGrid(region_site_yamls), plain_config, tmp_path / "plain")
    with np.load(results / "model_final.npz") as secure, np.load(tmp_path / "plain" / "model_final.npz") as plain:
        for name in plain.files:
            np.testing.assert_allclose(secure[name], plain[name], rtol=0, atol=2e-4)
    history = _history(results)
    assert history[0]["sites_train"] == TRAINING and history[0]["sites_failed"] == {}
    assert history[0]["train_sites"]["region_0"]["bytes-up"] > history[0]["float32_bytes"], "a masked vector went up"
