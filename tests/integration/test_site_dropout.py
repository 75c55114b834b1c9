"""A site that disconnects mid-run on real processes (SuperLink + 3 SuperNodes, TCGA-BRCA regions):
the round completes without it (quorum 1) and it rejoins. Its own module so that pytest-xdist can
run it beside tests/integration/test_federation_processes.py."""

from __future__ import annotations

import pytest

from .conftest import wait_until
from .test_federation_processes import BODY, TRAINING, _history, _status

pytestmark = pytest.mark.integration


def test_a_site_that_disconnects_misses_one_round_and_rejoins(federation):
    body = BODY.replace("round_timeout_s: 60", "round_timeout_s: 30").replace("rounds: 2\neval_every: 2", "rounds: 3\neval_every: 3")
    # no prediction phases or site outputs: each is one more message wave (~10 s) that this test does not look at
    # rejoin_wait_s: round 3 waits for the restarting site (the SuperNode and ClientApp start in ~10-60 s)
    config = federation.write_federation("dropout", body + "min_sites: 1\nrejoin_wait_s: 180\n"
                                         "prediction: {baseline: false}\nsite_outputs: {enabled: false}\n")
    results = federation.root / "results"
    server = federation.spawn_server("--config", str(config), "--results", str(results))
    wait_until(lambda: _status(results).get("completed_rounds", 0) >= 1, 240, "round 1 to complete",
               server, federation.server_log(server))
    federation.stop_site("region_1")  # disconnects while round 2 starts
    federation.start_site("region_1")  # and comes back as a new SuperNode
    wait_until(lambda: server.poll() is not None, 300, "the federation to finish")
    assert server.returncode == 0, federation.server_log(server).read_text()[-3000:]
    history = _history(results)
    assert history[1]["sites_train"] == ["region_0"], "round 2 completes with the remaining site (quorum 1)"
    assert list(history[1]["sites_failed"]) == ["region_1"], "the failure is reported under the site's name"
    assert history[2]["sites_train"] == TRAINING, "the site rejoins in round 3"
