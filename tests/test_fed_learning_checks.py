"""The coordinator notices a run that is not learning, and does not select a round on a handful of
validation events (real orchestrator and ClientApp handlers, in process, TCGA-BRCA regions)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from inprocess_grid import InProcessGrid, run_in_process, server_identity  # noqa: F401 (fixture)

from stsfl.client.lab.tcga_brca import write_region_sites
from stsfl.common.config import FederationConfig
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.phases.evaluation_phase import check_learning

BODY = (
    "task: linear-cox\nsites: [region_0, region_1, region_3]\nholdout: [region_3]\n"
    "prediction: {baseline: false}\nsite_outputs: {enabled: false}\n"
)


@pytest.fixture(scope="module")
def sites(tcga_brca_dir, tmp_path_factory):
    return {p.stem: p for p in write_region_sites(tcga_brca_dir, tmp_path_factory.mktemp("regions"), regions=[0, 1, 3])}


def _run(sites, tmp_path, name, extra):
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"name: {name}\n{BODY}{extra}")
    summary = run_in_process(InProcessGrid(sites), config, tmp_path / name)
    history = [json.loads(line) for line in (tmp_path / name / "rounds.jsonl").read_text().splitlines()]
    return summary, history


def test_a_run_that_does_not_learn_is_named_with_its_likely_cause(sites, tmp_path, capsys, server_identity):
    summary, _ = _run(sites, tmp_path, "stalled", "rounds: 5\nstall_rounds: 3\ntrain: {lr: 1.0e-7}\n")
    warnings = [w for w in summary["warnings"] if "not fallen for 3 rounds" in w]
    assert len(warnings) == 1 and "train.lr = 1e-07" in warnings[0] and "federation YAML" in warnings[0]
    assert "WARNING: the training loss has not fallen" in capsys.readouterr().out
    learning, _ = _run(sites, tmp_path, "learning", "rounds: 5\nstall_rounds: 3\n")  # the task's default recipe
    assert not [w for w in learning["warnings"] if "not fallen" in w]


def _state(losses):
    history = [{"train_sites": {"a": {"train-loss-fused": x, "num-events": 1.0}}} for x in losses]
    return ServerState(round=len(losses), global_arrays={}, meta={"history": history})


def _checker(**fed) -> tuple[SimpleNamespace, list[str]]:
    warned: list[str] = []
    ctx = SimpleNamespace(
        fed=FederationConfig(sites=["a", "b"], stall_rounds=3, **fed), warn=lambda state, text: warned.append(text)
    )
    return ctx, warned


def test_a_run_that_learned_and_levelled_off_is_not_called_stalled():
    """The warning is for a loss that never fell (rate too low) or rose: 8.1 -> 6.25 then three
    flat rounds is convergence (seen on a 20-round multimodal run, where it warned at round 16)."""
    ctx, warned = _checker(train={"schedule": "constant"})
    check_learning(ctx, _state([8.1, 7.0, 6.3, 6.25, 6.25, 6.26]))
    assert warned == []
    check_learning(ctx, _state([8.1, 8.1, 8.1, 8.1, 8.1]))
    assert len(warned) == 1 and "not learning" in warned[0] and "too low" in warned[0]


def test_a_run_still_warming_up_is_not_called_stalled():
    """OneCycle warms up from lr/25 over 30 % of a 20-round run: a 20-round multimodal run whose loss
    stayed at 8.00 for rounds 1-4 and fell to 6.16 from round 6 on was told at round 4 that it was
    not learning. The rounds count only after the warm-up (6 rounds here)."""
    ctx, warned = _checker(rounds=20, train={"schedule": "onecycle", "warmup_fraction": 0.3})
    for rounds in range(1, 10):
        check_learning(ctx, _state([8.0] * rounds))
    assert warned == [], "rounds 1-6 warm up; 3 flat rounds after them make 9"
    check_learning(ctx, _state([8.0] * 10))
    assert len(warned) == 1 and "not learning" in warned[0]
    ctx, warned = _checker(rounds=20, train={"schedule": "onecycle", "warmup_fraction": 0.3})
    check_learning(ctx, _state([8.0081, 8.0043, 8.0044, 8.0031, 7.9984, 7.9799, 7.925, 7.7609, 7.4432, 6.8445]))
    assert warned == []


def test_selection_falls_back_to_the_last_round_below_the_event_minimum(sites, tmp_path, server_identity):
    summary, history = _run(sites, tmp_path, "few", "rounds: 3\nselection: {min_validation_events: 100000}\n")
    assert summary["selected_round"] == 3 and summary["selection"].startswith("last round")
    assert any("model selection" in w for w in summary["warnings"])
    events = history[-1]["validation_events"]
    assert 0 < events < 100000
    summary, history = _run(sites, tmp_path, "enough", f"rounds: 3\nselection: {{min_validation_events: {int(events)}}}\n")
    smoothed = [r["selection_score_smoothed"] for r in history]
    assert summary["selected_round"] == 1 + smoothed.index(min(smoothed))
    assert "smoothed over rounds" in summary["selection"]


def test_a_convex_run_shows_its_penalised_objective_settling(sites, tmp_path, server_identity, capsys):
    summary, history = _run(sites, tmp_path, "objective", "rounds: 4\nl2_penalty: 0.5\n")
    objectives = [r["objective"] for r in history]
    changes = [r["objective_change"] for r in history[1:]]
    assert all(c < 0 for c in changes), "gradient descent on a convex objective lowers it every round"
    assert abs(changes[-1]) < abs(changes[0])
    assert changes == pytest.approx([b - a for a, b in zip(objectives, objectives[1:])])
    assert "objective " in capsys.readouterr().out
