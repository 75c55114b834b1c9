"""Gradient blending: hand-computed weights, the overfitting head losing weight, the MMNN softmax variant."""

from __future__ import annotations

import json
import math

import pytest

from stsfl.common.blending import (
    BlendState,
    Checkpoint,
    HeadLossStats,
    blend_weights,
    generalisation_and_overfitting,
    softmax_weights,
    wang_weights,
)

BEFORE = Checkpoint(train={"fused": 1.0, "mri": 1.0, "clinical": 1.0}, val={"fused": 1.2, "mri": 1.2, "clinical": 1.2})
# fused: G 0.2, O 0.1 -> 20; mri: val rose (G -0.1, O 0.6) -> 0; clinical: G 0.1, O -0.05 -> 40.
AFTER = Checkpoint(train={"fused": 0.7, "mri": 0.5, "clinical": 0.95}, val={"fused": 1.0, "mri": 1.3, "clinical": 1.1})


def test_statistics_by_hand():
    stats = generalisation_and_overfitting(BEFORE, AFTER)
    assert stats["fused"] == pytest.approx((0.2, 0.1))
    assert stats["mri"] == pytest.approx((-0.1, 0.6))
    assert stats["clinical"] == pytest.approx((0.1, -0.05))


def test_wang_weights_by_hand():
    w = blend_weights(BEFORE, AFTER, "wang")
    assert w == pytest.approx({"fused": 1 / 3, "mri": 0.0, "clinical": 2 / 3})
    assert sum(w.values()) == pytest.approx(1.0)


def test_softmax_weights_by_hand():
    w = blend_weights(BEFORE, AFTER, "softmax")
    ratios = {"fused": 20.0, "mri": -0.1 / 0.36, "clinical": 40.0}
    z = sum(math.exp(r) for r in ratios.values())
    assert w == pytest.approx({h: math.exp(r) / z for h, r in ratios.items()})
    assert w["mri"] > 0  # the softmax never silences a head whose validation loss rose


def test_overfitting_head_loses_weight():
    # Both heads generalise equally (G = 0.1); "mri" overfits (train falls fast, gap grows by 0.5).
    before = Checkpoint(train={"fused": 1.0, "mri": 1.0}, val={"fused": 1.1, "mri": 1.1})
    after = Checkpoint(train={"fused": 0.9, "mri": 0.4}, val={"fused": 1.0, "mri": 1.0})
    w = blend_weights(before, after, "wang")
    # fused: O = 0.1 - 0.1 = 0 -> floored at 1e-3; mri: O = 0.6 - 0.1 = 0.5.
    assert w["mri"] < 1e-4 and w["fused"] > 0.9999
    state = BlendState(heads=("fused", "mri"))
    state.update(5, before)
    state.update(10, after)
    assert state.weights["mri"] < state.history[0][1]["mri"]


def test_wang_is_scale_free_softmax_is_not():
    small = {"a": (0.002, 0.1), "b": (0.001, 0.1)}  # G/O^2 = 0.2 and 0.1
    large = {"a": (2.0, 0.1), "b": (1.0, 0.1)}  # G/O^2 = 200 and 100
    assert wang_weights(small) == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    assert wang_weights(large) == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    assert softmax_weights(small)["a"] == pytest.approx(1 / (1 + math.exp(-0.1)))  # ~0.52: near uniform
    assert softmax_weights(large)["a"] > 1 - 1e-40  # one-hot


def test_degenerate_cases():
    assert wang_weights({"a": (-0.1, 0.2), "b": (0.0, 0.3)}, previous={"a": 0.7, "b": 0.3}) == {"a": 0.7, "b": 0.3}
    assert wang_weights({"a": (-0.1, 0.2), "b": (0.0, 0.3)}) == {"a": 0.5, "b": 0.5}
    w = wang_weights({"a": (0.1, 0.0), "b": (0.1, 1e-9)})
    assert all(math.isfinite(x) for x in w.values()) and w == pytest.approx({"a": 0.5, "b": 0.5})
    with pytest.raises(ZeroDivisionError):
        softmax_weights({"a": (0.1, 0.0), "b": (0.1, 0.2)})
    assert blend_weights(BEFORE, AFTER, "off") == pytest.approx({"fused": 1 / 3, "mri": 1 / 3, "clinical": 1 / 3})


def test_blend_state_history_and_round_trip():
    state = BlendState(heads=("fused", "mri", "clinical"))
    assert state.weights == pytest.approx({"fused": 1 / 3, "mri": 1 / 3, "clinical": 1 / 3})
    assert state.update(5, BEFORE) == pytest.approx({"fused": 1 / 3, "mri": 1 / 3, "clinical": 1 / 3})
    state.update(10, AFTER)
    assert [e for e, _ in state.history] == [0, 10]
    assert state.history[-1][1] == pytest.approx({"fused": 1 / 3, "mri": 0.0, "clinical": 2 / 3})
    again = BlendState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again.weights == state.weights and again.history == state.history and again.last == state.last


def test_pooled_head_statistics():
    site_a = HeadLossStats(loss_sums={"fused": (3.0, 1.0)}, events={"fused": (3, 1)})
    site_b = HeadLossStats(loss_sums={"fused": (5.0, 0.0)}, events={"fused": (1, 0)})
    pooled = HeadLossStats.merge([site_a, site_b])
    assert pooled.events == {"fused": (4, 1)}
    assert pooled.mean_losses() == pytest.approx({"fused": 8.0 / 4 + 1.0 / 1})
    assert HeadLossStats.from_dict(json.loads(json.dumps(pooled.to_dict()))) == pooled
