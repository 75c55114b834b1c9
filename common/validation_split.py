"""Which of a site's patients validate: fixed hashes of (run seed, patient id), so every message of a
run, on any machine, sees the same split, and no patient list ever leaves the site.

A share of `fraction` validates. A small site's share holds a handful of events, and the
federation's model selection and blending rest on those validation losses, so a site whose
validation patients hold fewer than `min_events` events (all endpoints) takes the next patients in
hash order until they do, up to `max_fraction` of its patients: the split only grows, and a site
with enough events keeps exactly the `fraction` split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

# The federation's defaults (selection.min_site_validation_events, selection.max_validation_fraction).
MIN_SITE_EVENTS = 10
MAX_FRACTION = 0.35


def patient_hash32(text: str) -> int:
    """A fixed 32-bit hash of `text` (the same on every machine and Python run)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _position(pid: str, seed: int) -> float:
    """The patient's place in [0, 1) of the validation order."""
    return patient_hash32(f"{seed}:{pid}") / 2**32


def in_validation(pid: str, seed: int, fraction: float) -> bool:
    """Whether a patient is in the plain `fraction` validation split."""
    return _position(pid, seed) < fraction


def fold_of(pid: str, seed: int, folds: int) -> int:
    """A patient's cross-validation fold: a fixed hash of (run seed, patient id), not the validation split's."""
    return patient_hash32(f"cv:{seed}:{pid}") % folds


def validation_pids(
    pids: Sequence[str],
    events: Sequence[float],
    seed: int,
    fraction: float,
    min_events: int = MIN_SITE_EVENTS,
    max_fraction: float = MAX_FRACTION,
) -> set[str]:
    """The validating patients: those below `fraction` in hash order, then the next ones while the
    split holds fewer than `min_events` events and stays within `max_fraction` of the patients.

    pids, events: the site's patients and each one's event count (summed over endpoints) [N].
    `fraction` 0 keeps no validation split whatever the minimum."""
    if len(pids) != len(events):
        raise ValueError(f"{len(pids)} patient ids but {len(events)} event counts")
    position = np.array([_position(p, seed) for p in pids])
    chosen = position < fraction
    held = float(np.sum(np.asarray(events, float)[chosen]))
    if fraction > 0:
        limit = int(np.floor(max_fraction * len(pids)))
        for i in np.argsort(position, kind="stable"):
            if held >= min_events or chosen.sum() >= limit:
                break
            if not chosen[i]:
                chosen[i] = True
                held += float(events[i])
    return {p for p, c in zip(pids, chosen, strict=True) if c}
