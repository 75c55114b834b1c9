"""A site that answers too late, on real processes (SuperLink + 3 SuperNodes, TCGA-BRCA regions):
its ClientApp hangs (SIGSTOP) in round 2, the round times out and completes without it (quorum 1),
the late reply is dropped, and the site trains again in round 3."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from stsfl.common.flower_procs import descendants

from .conftest import wait_until
from .test_federation_processes import BODY, TRAINING, _history, _status

pytestmark = pytest.mark.integration

TIMEOUT_S = 30  # a healthy ClientApp answers in ~10-15 s on two busy cores


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


def test_a_site_that_answers_too_late_misses_the_round_and_trains_again(federation):
    body = BODY.replace("round_timeout_s: 60", f"round_timeout_s: {TIMEOUT_S}").replace(
        "rounds: 2\neval_every: 2", "rounds: 3\neval_every: 3")
    # rejoin_wait_s: on a busy machine the SuperLink may list region_1's node as gone for a moment
    # after its ClientApp hung; round 3 waits for it to be back instead of racing it
    config = federation.write_federation("timeout", body + "min_sites: 1\nrejoin_wait_s: 180\n"
                                         "prediction: {baseline: false}\nsite_outputs: {enabled: false}\n")
    results = federation.root / "results"
    server = federation.spawn_server("--config", str(config), "--results", str(results))
    log = federation.server_log(server)
    wait_until(lambda: _status(results).get("completed_rounds", 0) >= 1, 240, "round 1 to complete", server, log)
    node = federation.nodes["region_1"]
    earlier = _client_apps(node.pid)
    hung: list[int] = []

    def round_2_client_app_started() -> bool:
        hung[:] = sorted(_client_apps(node.pid) - earlier)
        return bool(hung)

    wait_until(round_2_client_app_started, 60, "region_1's round-2 ClientApp", server, log)
    for pid in hung:
        os.kill(pid, signal.SIGSTOP)  # the site's training hangs; its SuperNode still answers heartbeats
    try:
        wait_until(lambda: "site region_1 did not train" in log.read_text(encoding="utf-8", errors="replace"),
                   TIMEOUT_S + 60, "round 2 to give up on region_1", server, log)
    finally:
        for pid in hung:
            try:
                os.kill(pid, signal.SIGCONT)  # it finishes and replies after the round has closed
            except ProcessLookupError:
                pass
    wait_until(lambda: server.poll() is not None, 300, "the federation to finish")
    assert server.returncode == 0, log.read_text()[-3000:]
    history = _history(results)
    assert history[1]["sites_train"] == ["region_0"], "round 2 completes with the site that answered"
    assert history[1]["sites_failed"] == {"region_1": f"no reply within {TIMEOUT_S} s"}
    assert history[1]["time_wait_s"] >= TIMEOUT_S - 1
    assert history[2]["sites_train"] == TRAINING, "the late site trains again in round 3"
    assert len(history) == 3 and _status(results)["phase"] == "done"
