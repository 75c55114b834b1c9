"""A training round that no site answered is sent again (`round_retries`, the wait doubled each
time) instead of ending the run, and every message lives longer than the round waits for it
(real ServerApp orchestration and ClientApp handlers in one process; the lost replies are what an
overloaded machine produced: every message of the round expired)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)

from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.fed_protocol import MSG_TRAIN
from stsfl.server.federation.sites import TTL_MARGIN_S
from stsfl.server.phases.training_round import QuorumError

BODY = """task: linear-cox
sites: [region_0, region_1]
min_sites: 1
rounds: 2
train: {epochs_per_round: 2, lr: 0.05, seed: 4}
round_timeout_s: 30
prediction: {baseline: false}
site_outputs: {enabled: false}
"""


class LosingGrid(InProcessGrid):
    """The in-process grid, except that the first `lose` waves of train messages get no reply."""

    def __init__(self, site_yamls: dict[str, Path], lose: int):
        super().__init__(site_yamls)
        self.lose = lose
        self.train_waves: list[tuple[float, list[float]]] = []  # (timeout, message TTLs) per train wave

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if messages and messages[0].metadata.message_type == MSG_TRAIN:
            self.train_waves.append((timeout, [m.metadata.ttl for m in messages]))
            if self.lose > 0:
                self.lose -= 1
                return []
        return super().send_and_receive(messages, timeout=timeout)


@pytest.fixture(scope="module")
def region_sites(tcga_brca_dir, tmp_path_factory) -> dict:
    paths = write_region_sites(tcga_brca_dir, tmp_path_factory.mktemp("regions"), regions=[0, 1])
    return {p.stem: p for p in paths}


def test_a_round_nobody_answered_is_sent_again_with_a_longer_wait(region_sites, tmp_path, server_identity, capsys):
    config = tmp_path / "federation.yaml"
    config.write_text(BODY)
    reference = run_in_process(InProcessGrid(region_sites), config, tmp_path / "straight")
    grid = LosingGrid(region_sites, lose=2)
    summary = run_in_process(grid, config, tmp_path / "retried")
    assert [t for t, _ in grid.train_waves] == [30, 60, 120, 30], "round 1: twice lost, then answered; round 2 at once"
    assert all(ttl == timeout + TTL_MARGIN_S for timeout, ttls in grid.train_waves for ttl in ttls)
    out = capsys.readouterr().out
    assert "round 1: no training site replied; sending it again (retry 1 of 2, waiting 60 s)" in out
    assert "retry 2 of 2, waiting 120 s" in out
    assert summary == reference, "the retried round is the same computation"
    with np.load(tmp_path / "straight" / "model_final.npz") as a, np.load(tmp_path / "retried" / "model_final.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_the_run_fails_when_the_retries_are_spent(region_sites, tmp_path, server_identity):
    config = tmp_path / "federation.yaml"
    config.write_text(BODY + "round_retries: 1\n")
    with pytest.raises(QuorumError, match=r"round 1: 0 training site\(s\) replied"):
        run_in_process(LosingGrid(region_sites, lose=2), config, tmp_path / "results")
