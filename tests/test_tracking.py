"""The TensorBoard store the results folder keeps, read back with TensorBoard's own reader."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stsfl.server.reports.results import ResultsFolder
from stsfl.server.reports.tracking import TRACKING_DIR


def _history(rounds: int) -> list[dict]:
    out = []
    for r in range(1, rounds + 1):
        record = {
            "round": r,
            "blend_weights": {"fused": 0.5, "clinical": 0.5},
            "train_sites": {
                "a": {"num-events": 2.0, "train-loss-fused": 3.0 / r, "bytes-up": 400.0},
                "b": {"num-events": 6.0, "train-loss-fused": 1.0 / r, "val-loss-fused": 0.5},
            },
            "time_round_s": 10.0 + r,
        }
        if r % 2 == 0:
            record["evaluate_sites"] = {"c": {"c-harrell-os": 0.6 + 0.01 * r, "eval-events-os": 4.0}}
            record["selection_score"] = 1.0 / r
        out.append(record)
    return out


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_rounds_are_read_back_per_tag(tmp_path):
    folder = ResultsFolder(tmp_path)
    folder.write_history(_history(4))
    scalars = _scalars(tmp_path / TRACKING_DIR)
    # events-weighted over sites: (2 * 3/r + 6 * 1/r) / 8
    assert scalars["train/train-loss-fused"] == [(r, pytest.approx(12 / 8 / r)) for r in (1, 2, 3, 4)]
    assert scalars["train/val-loss-fused"] == [(r, pytest.approx(0.5)) for r in (1, 2, 3, 4)]
    assert scalars["site/c/c-harrell-os"] == [(2, pytest.approx(0.62)), (4, pytest.approx(0.64))]
    assert [s for s, _ in scalars["round/selection_score"]] == [2, 4]
    assert scalars["blend/clinical"][0] == (1, 0.5)
    assert "site/a/bytes-up" not in scalars


def test_rewriting_after_a_resume_keeps_one_copy_of_each_round(tmp_path):
    folder = ResultsFolder(tmp_path)
    history = _history(3)
    for n in range(1, 4):  # after every round, as the server does; then once more as after a resume
        folder.write_history(history[:n])
    folder.write_history(history)
    assert len(list((tmp_path / TRACKING_DIR).glob("events.out.tfevents.*"))) == 1
    assert [s for s, _ in _scalars(tmp_path / TRACKING_DIR)["train/train-loss-fused"]] == [1, 2, 3]
