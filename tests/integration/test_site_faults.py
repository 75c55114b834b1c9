"""Site faults on real processes, one federation (SuperLink + 3 SuperNodes, TCGA-BRCA regions 0 and
1 train, 3 held out, quorum 1), one fault per round, each followed by a complete round:

- round 2: region_1's ClientApp hangs (SIGSTOP): the round times out and completes with region_0,
  the late reply is dropped;
- round 3: region_0 sends NaN weights (tests/integration/poisoned_site): the update is rejected and
  logged, not averaged, and the round completes with region_1, which is back after its hang;
- round 4: region_1's sts-client is killed as the round starts and restarted: the round completes
  with region_0;
- round 5: both train again, and the run ends with a finite model and held-out metrics.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from stsfl.common.flower_procs import descendants

from .conftest import wait_until
from .test_federation_processes import BODY, HOLDOUT, TRAINING, _history, _status

pytestmark = pytest.mark.integration

TIMEOUT_S = 45  # a healthy ClientApp answers in ~10-15 s on two idle cores, 30+ on two busy ones (round 1 timed out at 30 s once)
POISONED_SITE = {"PYTHONPATH": str(Path(__file__).parent / "poisoned_site"), "STSFL_POISON_ROUND": "3"}


def _client_apps(node_pid: int) -> set[int]:
    """The flwr-clientapp processes under a site's sts-client (one per message it handles)."""
    apps = set()
    for pid in descendants(node_pid):
        try:
            if b"flwr-clientapp" in Path(f"/proc/{pid}/cmdline").read_bytes():
                apps.add(pid)
        except OSError:
            continue
    return apps


def _hang_next_client_app(federation, site: str, server, log: Path) -> None:
    """SIGSTOP the next ClientApp of `site` (its train message) until the round gives up on it."""
    node = federation.nodes[site]
    earlier = _client_apps(node.pid)
    hung: list[int] = []

    def next_client_app_started() -> bool:
        hung[:] = sorted(_client_apps(node.pid) - earlier)
        return bool(hung)

    wait_until(next_client_app_started, 60, f"{site}'s next ClientApp", server, log)
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)  # the site's training hangs; its SuperNode still answers heartbeats
    try:
        wait_until(lambda: f"site {site} did not train" in log.read_text(encoding="utf-8", errors="replace"),
                   TIMEOUT_S + 60, f"the round to give up on {site}", server, log)
    finally:
        for pid in hung:
            try:
                os.kill(pid, signal.SIGCONT)  # it finishes and replies after the round has closed
            except ProcessLookupError:
                pass


def test_a_hung_a_poisoned_and_a_killed_site_each_cost_one_round(federation):
    federation.stop_site("region_0")
    federation.start_site("region_0", env=POISONED_SITE)
    body = BODY.replace("round_timeout_s: 60", f"round_timeout_s: {TIMEOUT_S}").replace(
        "rounds: 2\neval_every: 2", "rounds: 5\neval_every: 5")
    # rejoin_wait_s: a round first waits for a site that hung or restarted (its SuperNode may be listed
    # as gone for a moment) instead of racing it; no prediction phases or site outputs: each is one
    # more message wave (~10 s) that this test does not look at
    config = federation.write_federation("faults", body + "min_sites: 1\nrejoin_wait_s: 180\n"
                                         "prediction: {baseline: false}\nsite_outputs: {enabled: false}\n")
    results = federation.root / "results"
    server = federation.spawn_server("--config", str(config), "--results", str(results))
    log = federation.server_log(server)
    wait_until(lambda: _status(results).get("completed_rounds", 0) >= 1, 240, "round 1 to complete", server, log)
    _hang_next_client_app(federation, "region_1", server, log)
    wait_until(lambda: _status(results).get("completed_rounds", 0) >= 3, 300, "round 3 to complete", server, log)
    federation.stop_site("region_1")  # disconnects while round 4 starts
    federation.start_site("region_1")  # and comes back as a new SuperNode
    wait_until(lambda: server.poll() is not None, 400, "the federation to finish")
    assert server.returncode == 0, log.read_text()[-3000:]
    history = _history(results)
    assert [r["round"] for r in history] == [1, 2, 3, 4, 5] and _status(results)["phase"] == "done"
    assert history[0]["sites_train"] == TRAINING

    assert history[1]["sites_train"] == ["region_0"], "round 2 completes with the site that answered"
    assert history[1]["sites_failed"] == {"region_1": f"no reply within {TIMEOUT_S} s"}
    assert history[1]["time_wait_s"] >= TIMEOUT_S - 1

    assert history[2]["sites_train"] == ["region_1"], "round 3 averages the healthy site only"
    assert history[2]["sites_failed"]["region_0"].startswith("update rejected: non-finite values (NaN/inf)")
    assert "round 3: update of site region_0 rejected, not averaged" in log.read_text(encoding="utf-8", errors="replace")

    assert history[3]["sites_train"] == ["region_0"], "round 4 completes with the remaining site"
    assert list(history[3]["sites_failed"]) == ["region_1"], "the failure is reported under the site's name"

    assert history[4]["sites_train"] == TRAINING, "every site trains again in round 5"
    with np.load(results / "model_final.npz") as final:
        assert all(np.isfinite(final[k]).all() for k in final.files)
    assert 0.0 < history[4]["evaluate_sites"][HOLDOUT]["c-harrell-os"] < 1.0
