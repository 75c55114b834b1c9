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
    # Raw rule (no relative floor): fused 0.2 / 0.1^2 = 20, mri 0, clinical 0.1 / 0.05^2 = 40.
    w = blend_weights(BEFORE, AFTER, "wang", overfit_floor=0.0)
    assert w == pytest.approx({"fused": 1 / 3, "mri": 0.0, "clinical": 2 / 3})
    assert sum(w.values()) == pytest.approx(1.0)
    # Floored at the mean |O| = (0.1 + 0.6 + 0.05) / 3 = 0.25: fused 0.2 / 0.25^2 = 3.2, clinical 1.6.
    w = blend_weights(BEFORE, AFTER, "wang")
    assert w == pytest.approx({"fused": 2 / 3, "mri": 0.0, "clinical": 1 / 3})
    # Half the mean (0.125): fused 0.2 / 0.125^2 = 12.8, clinical 0.1 / 0.125^2 = 6.4.
    assert blend_weights(BEFORE, AFTER, "wang", overfit_floor=0.5) == pytest.approx(
        {"fused": 2 / 3, "mri": 0.0, "clinical": 1 / 3}
    )


def test_chance_small_gap_change_no_longer_takes_all_the_weight():
    # Per-head (G, O) of the first update on the default synthetic cohort (epochs 5 -> 10, 63
    # validation patients): the clinical head's gap happened to move by 0.004, and the WSI head had
    # not learnt at all. The raw rule gave clinical 0.98 (its validation loss then rose) and would
    # give the dead WSI head weight as soon as G rounds to a positive value.
    stats = {"fused": (0.344, -0.045), "mri": (0.248, -0.082), "wsi": (1e-4, 1e-5), "clinical": (0.197, 0.004)}
    raw = wang_weights(stats, overfit_floor=0.0)
    assert raw["clinical"] > 0.95
    floored = wang_weights(stats)
    assert max(floored.values()) < 0.6 and floored["fused"] > 0.3 and floored["clinical"] > 0.3
    assert floored["wsi"] < 1e-3 < raw["wsi"] * 10
    # Scale-free: losses in other units (all G and O times 7) give the same weights.
    assert wang_weights({h: (7 * g, 7 * o) for h, (g, o) in stats.items()}) == pytest.approx(floored)


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
    # fused: O = 0.1 - 0.1 = 0; mri: O = 0.6 - 0.1 = 0.5. Raw rule: fused floored at 1e-3.
    w = blend_weights(before, after, "wang", overfit_floor=0.0)
    assert w["mri"] < 1e-4 and w["fused"] > 0.9999
    # Relative floor: fused |O| -> mean 0.25, so 0.1 / 0.0625 = 1.6 against mri 0.1 / 0.25 = 0.4.
    assert blend_weights(before, after, "wang") == pytest.approx({"fused": 0.8, "mri": 0.2})
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
    assert softmax_weights(large)["b"] == pytest.approx(math.exp(-100.0), rel=1e-6)  # one-hot


def test_degenerate_cases():
    assert wang_weights({"a": (-0.1, 0.2), "b": (0.0, 0.3)}, previous={"a": 0.7, "b": 0.3}) == {"a": 0.7, "b": 0.3}
    assert wang_weights({"a": (-0.1, 0.2), "b": (0.0, 0.3)}) == {"a": 0.5, "b": 0.5}
    for floor in (0.0, 1.0):  # O = 0 everywhere: min_overfit keeps the ratios finite
        w = wang_weights({"a": (0.1, 0.0), "b": (0.1, 1e-9)}, overfit_floor=floor)
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
    assert state.history[-1][1] == pytest.approx({"fused": 2 / 3, "mri": 0.0, "clinical": 1 / 3})
    assert state.stats_history == [(10, generalisation_and_overfitting(BEFORE, AFTER))]
    again = BlendState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again.weights == state.weights and again.history == state.history and again.last == state.last
    assert again.overfit_floor == 1.0 and again.stats_history == state.stats_history
    # A state saved before the floor existed resumes with the raw rule it started with.
    old = {k: v for k, v in state.to_dict().items() if k not in ("overfit_floor", "stats_history")}
    assert BlendState.from_dict(old).overfit_floor == 0.0


def test_pooled_head_statistics():
    site_a = HeadLossStats(loss_sums={"fused": (3.0, 1.0)}, events={"fused": (3, 1)})
    site_b = HeadLossStats(loss_sums={"fused": (5.0, 0.0)}, events={"fused": (1, 0)})
    pooled = HeadLossStats.merge([site_a, site_b])
    assert pooled.events == {"fused": (4, 1)}
    assert pooled.mean_losses() == pytest.approx({"fused": 8.0 / 4 + 1.0 / 1})
    assert HeadLossStats.from_dict(json.loads(json.dumps(pooled.to_dict()))) == pooled


def _oscillating(n: int) -> list[Checkpoint]:
    """Losses that fall slowly for every head, plus noise that flips sign each update; the wsi head
    learns nothing for the first half, then starts to."""
    out = []
    for t in range(n):
        wobble = 0.15 * (-1) ** t
        wsi = 2.0 if t < n // 2 else 2.0 - 0.05 * (t - n // 2)
        out.append(
            Checkpoint(
                train={"fused": 2.0 - 0.04 * t, "mri": 2.0 - 0.03 * t, "wsi": wsi},
                val={"fused": 2.1 - 0.02 * t + wobble, "mri": 2.1 - 0.015 * t - wobble, "wsi": wsi + 0.1},
            )
        )
    return out


def test_smoothing_and_bounded_steps_tame_oscillating_statistics():
    heads = ("fused", "mri", "wsi")
    raw, tamed = BlendState(heads=heads), BlendState(heads=heads, smoothing=0.5, max_change=0.2, min_weight=0.02)
    for t, checkpoint in enumerate(_oscillating(12)):
        raw.update(t, checkpoint)
        tamed.update(t, checkpoint)

    def largest_jump(state):
        return max(abs(b[h] - a[h]) for (_, a), (_, b) in zip(state.history, state.history[1:]) for h in heads)

    assert largest_jump(raw) > 0.9  # the raw rule swings fused <-> mri as the noise flips
    assert largest_jump(tamed) <= 0.2 + 1e-9
    assert all(min(w.values()) >= 0.02 - 1e-12 and sum(w.values()) == pytest.approx(1.0) for _, w in tamed.history)


def test_a_head_at_the_floor_comes_back_when_it_starts_to_generalise():
    heads = ("fused", "mri", "wsi")
    state = BlendState(heads=heads, smoothing=0.5, max_change=0.25, min_weight=0.02)
    weights = [dict(state.update(t, c)) for t, c in enumerate(_oscillating(24))]
    lowest = min(w["wsi"] for w in weights[:12])
    assert lowest == pytest.approx(0.02, abs=0.01)  # a head that learns nothing sinks to the floor
    assert weights[-1]["wsi"] > 5 * lowest  # and comes back once its validation loss falls


def test_blend_state_round_trips_with_its_smoothing():
    state = BlendState(heads=("fused", "mri"), smoothing=0.3, max_change=0.5, min_weight=0.01)
    for t, c in enumerate(_oscillating(4)):
        state.update(t, Checkpoint(train={h: c.train[h] for h in ("fused", "mri")}, val={h: c.val[h] for h in ("fused", "mri")}))
    again = BlendState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state


def test_the_fused_head_never_trains_less_than_without_blending():
    """The fused head is the prediction: under the oscillating statistics (where the raw rule hands
    fused <-> mri all the weight by turns) it keeps at least its unblended share, the other heads
    share the rest above their floor, and the weights still sum to 1."""
    heads = ("fused", "mri", "wsi", "clinical")
    free = BlendState(heads=heads, smoothing=0.5, max_change=0.25, min_weight=0.02)
    anchored = BlendState(heads=heads, smoothing=0.5, max_change=0.25, min_weight=0.02, fused_min_weight=0.25)
    for t, c in enumerate(_oscillating(24)):
        extended = Checkpoint(train={**c.train, "clinical": 1.0 - 0.01 * t}, val={**c.val, "clinical": 1.2 - 0.005 * t})
        free.update(t, extended)
        anchored.update(t, extended)
    assert min(w["fused"] for _, w in free.history) < 0.2, "without the floor the fused head sinks"
    for (_, w), (_, w_free) in zip(anchored.history, free.history):
        assert w["fused"] >= 0.25 - 1e-12 and sum(w.values()) == pytest.approx(1.0)
        assert min(w.values()) >= 0.02 - 1e-12
        if w_free["fused"] < 0.25:  # the others keep their order, scaled into what is left
            others = [h for h in heads if h != "fused"]
            assert sorted(others, key=w.get) == sorted(others, key=w_free.get)
    with pytest.raises(ValueError, match="fused_min_weight"):
        BlendState(heads=heads, min_weight=0.1, fused_min_weight=0.8)
