"""A site's validation split: the plain hash share, grown at a small site until it holds enough events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stsfl.common.validation_split import in_validation, validation_pids
from stsfl.tasks.linear_cox.site import LinearCoxSite

PIDS = [f"P{i:03d}" for i in range(60)]


def _events(rate: float, seed: int = 0) -> list[int]:
    return (np.random.default_rng(seed).random(len(PIDS)) < rate).astype(int).tolist()


def _held(chosen: set[str], events: list[int]) -> int:
    return sum(e for p, e in zip(PIDS, events, strict=True) if p in chosen)


def test_a_site_with_enough_events_keeps_the_plain_share():
    events = [3] * len(PIDS)
    assert validation_pids(PIDS, events, 7, 0.2, 10, 0.35) == {p for p in PIDS if in_validation(p, 7, 0.2)}


def test_a_small_site_grows_its_split_in_hash_order_until_it_holds_the_minimum():
    events = _events(0.3)
    plain = validation_pids(PIDS, events, 0, 0.2, 0, 0.0)
    grown = validation_pids(PIDS, events, 0, 0.2, 8, 0.6)
    assert _held(plain, events) < 8 <= _held(grown, events)
    assert plain < grown, "the split only grows"
    # the patients added are the next ones in the hash order: a larger minimum adds to the same list
    assert grown < validation_pids(PIDS, events, 0, 0.2, 10, 0.6)
    # and it stops at the first patient that completes the minimum
    last_added = max(grown - plain, key=_rank)
    assert _held(grown - {last_added}, events) < 8
    assert all(_rank(p) > _rank(q) for p in PIDS if p not in grown for q in grown - plain)


def _rank(pid: str) -> float:
    """The patient's place in the hash order (the smallest fraction that validates it)."""
    low, high = 0.0, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (low, mid) if in_validation(pid, 0, mid) else (mid, high)
    return high


def test_the_split_never_grows_past_max_fraction():
    events = [0] * len(PIDS)  # no events at all: the minimum cannot be reached
    grown = validation_pids(PIDS, events, 0, 0.2, 10, 0.3)
    assert len(grown) == int(0.3 * len(PIDS))
    assert validation_pids(PIDS, events, 0, 0.2, 10, 0.0) == {p for p in PIDS if in_validation(p, 0, 0.2)}


def test_no_validation_split_stays_none():
    assert validation_pids(PIDS, _events(0.1), 0, 0.0, 10, 0.35) == set()


def test_a_count_per_patient_is_required():
    with pytest.raises(ValueError, match="60 patient ids but 3 event counts"):
        validation_pids(PIDS, [1, 0, 1], 0, 0.2, 0, 0.0)


def test_a_linear_cox_site_with_few_events_validates_more_patients(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"pid": PIDS, "x": rng.normal(size=len(PIDS)), "E": _events(0.25, 3), "T": rng.uniform(10, 900, len(PIDS))}
    )
    csv = tmp_path / "site.csv"
    frame.to_csv(csv, index=False)
    plain = LinearCoxSite(csv, 0, 0.2, min_validation_events=0)
    grown = LinearCoxSite(csv, 0, 0.2, min_validation_events=5, max_validation_fraction=0.5)
    assert plain.val.event.sum() < 5 <= grown.val.event.sum()
    assert len(grown.train_pids) + len(grown.val.event) == len(PIDS)
    assert set(grown.train_pids) < set(plain.train_pids)
