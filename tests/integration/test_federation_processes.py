"""A federation of real processes on loopback: SuperLink + 3 SuperNodes, one centre held out,
whose coordinator is killed after round 1, whose newest checkpoint is then damaged (truncated, as
by a disk that filled up during the write), and which is resumed: the resume must say so, go back
to the previous checkpoint and still end as the uninterrupted one (computed in this process by
the same ServerApp and ClientApp code), and its results folder must hold per-round metrics for
every site and the held-out metrics. (Cross-site validation and the prediction phases run on real
processes in test_demo_federation.py, and in process in tests/test_fed_validation.py.)

Sites are real data (TCGA-BRCA regions 0 and 1 train, region 3 is held out) with the
clinical-only linear Cox task, so the run takes about two minutes on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)

from stsfl.server.cli import run_federation
from stsfl.server.reports.results import read_site_metrics

from .conftest import POLL_INTERVAL, LocalFederation, kill_tree, wait_until

pytestmark = pytest.mark.integration

TRAINING, HOLDOUT = ["region_0", "region_1"], "region_3"
BODY = f"""holdout: [{HOLDOUT}]
strategy: fedadam
strategy_params: {{server_lr: 0.05}}
rounds: 2
eval_every: 2
train: {{epochs_per_round: 5, lr: 0.05, seed: 7}}
round_timeout_s: 60
wait_for_sites_s: 90
"""


def _status(results: Path) -> dict:
    try:
        return json.loads((results / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _history(results: Path) -> list[dict]:
    return [json.loads(line) for line in (results / "rounds.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def completed_run(region_site_yamls, tmp_path_factory) -> Path:
    """A 2-round federation whose sts-server is killed as round 2 starts (SuperLink and ServerApp
    included), whose round-1 checkpoint is truncated, and which is resumed with `--resume` until
    the end."""
    root = tmp_path_factory.mktemp("complete")
    (root / "logs").mkdir()
    fed = LocalFederation(root, region_site_yamls)
    results = root / "results"
    try:
        for site in region_site_yamls:
            fed.start_site(site)
        # the phases after the last round (each one more message wave) run on real processes in test_demo_federation
        config = fed.write_federation(
            "complete", BODY + "min_sites: 2\nprediction: {baseline: false}\nsite_outputs: {enabled: false}\n"
        )
        server = fed.spawn_server("--config", str(config), "--results", str(results))
        wait_until(
            lambda: _status(results).get("completed_rounds", 0) >= 1, 240, "round 1 to complete", server, fed.server_log(server)
        )
        kill_tree(server.pid)  # the coordinator crashes between rounds
        server.wait(10)
        assert _status(results)["completed_rounds"] == 1
        checkpoint = results / "checkpoint.npz"
        checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
        run_federation(
            results / "federation.yaml", results, port=fed.port, resume=True, task_poll_interval=POLL_INTERVAL, echo=print
        )
    finally:
        fed.stop_all()
    return results


def test_the_resumed_run_ends_with_the_uninterrupted_model(completed_run, region_site_yamls, tmp_path, server_identity):
    log = (completed_run / "server.log").read_text(encoding="utf-8", errors="replace")
    assert "resuming from" in log and "checkpoint.prev.npz (after round 0)" in log, log[-2000:]
    assert [r["round"] for r in _history(completed_run)] == [1, 2], "round 1 ran again after the damaged checkpoint"
    straight = tmp_path / "straight"
    reference = run_in_process(InProcessGrid(region_site_yamls), completed_run / "federation.yaml", straight)
    with np.load(completed_run / "model_final.npz") as resumed, np.load(straight / "model_final.npz") as uninterrupted:
        assert resumed.files == uninterrupted.files
        for name in uninterrupted.files:
            np.testing.assert_allclose(resumed[name], uninterrupted[name], rtol=1e-6, atol=1e-7)
    summary = json.loads((completed_run / "summary.json").read_text())
    assert summary["holdout_final"].keys() == reference["holdout_final"].keys()
    for site, metrics in reference["holdout_final"].items():
        assert summary["holdout_final"][site] == pytest.approx(metrics, rel=1e-6)


def test_results_hold_per_round_metrics_for_every_site(completed_run):
    rows = read_site_metrics(completed_run)
    for server_round in (1, 2):
        trained = {r["site"] for r in rows if r["round"] == server_round and r["phase"] == "train"}
        assert trained == set(TRAINING), f"round {server_round}: held-out centres never train"
        for site in TRAINING:
            metrics = {r["metric"] for r in rows if r["round"] == server_round and r["site"] == site}
            assert {"train-loss-fused", "val-loss-fused", "num-events", "bytes-up"} <= metrics
    evaluated = {r["site"] for r in rows if r["phase"] == "evaluate"}
    assert evaluated == {*TRAINING, HOLDOUT} and {r["round"] for r in rows if r["phase"] == "evaluate"} == {2}
    holdout_c = [r["value"] for r in rows if r["site"] == HOLDOUT and r["metric"] == "c-harrell-os"]
    assert len(holdout_c) == 1 and 0.0 < holdout_c[0] < 1.0
    summary = json.loads((completed_run / "summary.json").read_text())
    assert summary["holdout_sites"] == [HOLDOUT]
    assert 0.0 < summary["holdout_selected"][HOLDOUT]["c-harrell-os"] < 1.0
    assert summary["selected_round"] == 2
    statistics = json.loads((completed_run / "statistics.json").read_text())
    assert set(statistics["per_site_counts"]) == {*TRAINING, HOLDOUT}
    assert all(c["events"]["os"] > 0 for c in statistics["per_site_counts"].values())
    # bytes per round: the 39 weights + bias of the linear Cox model, each way, as float32
    history = _history(completed_run)
    assert history[0]["train_sites"]["region_0"]["bytes-up"] == 4 * 40 == history[0]["float32_bytes"]
    assert _status(completed_run)["phase"] == "done"
    held_out = summary["holdout_selected"][HOLDOUT]
    assert {"c-uno-os", "auc-365d-os", "auc-730d-os", "ibs-os", "eval-events-os"} <= set(held_out)
    assert 0.0 < held_out["c-uno-os"] < 1.0 and 0.0 < held_out["ibs-os"] < 0.5
