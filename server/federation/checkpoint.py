"""The server's checkpoint: everything needed to continue a federation after the last complete round.

One file, `checkpoint.npz`, written to a temporary name and renamed over the old one (atomic on
POSIX), so a crash never leaves a half-written checkpoint; the one before it is kept as
`checkpoint.prev.npz`, which `load_checkpoint` falls back to when the newest cannot be read (a
disk error, a truncated copy: every member of the zip is read and CRC-checked). It holds the global weights
(`global/<name>`), the best-so-far weights (`best/<name>`), strategy state (`strategy/<name>`,
e.g. FedAdam's moments) and a JSON document `meta` (round, blend weights, federated statistics,
metrics history, best round).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stsfl.common.atomic_file import atomic_path

CHECKPOINT_NAME = "checkpoint.npz"
PREVIOUS_NAME = "checkpoint.prev.npz"


@dataclass
class ServerState:
    """State after `round` complete rounds (0 = after the statistics phase, before training)."""

    round: int
    global_arrays: dict[str, np.ndarray]
    strategy_state: dict[str, np.ndarray] = field(default_factory=dict)
    best_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(results_dir: Path, state: ServerState) -> Path:
    """Write `results_dir/checkpoint.npz` atomically."""
    path = Path(results_dir) / CHECKPOINT_NAME
    payload: dict[str, np.ndarray] = {}
    payload.update({f"global/{k}": v for k, v in state.global_arrays.items()})
    payload.update({f"best/{k}": v for k, v in state.best_arrays.items()})
    payload.update({f"strategy/{k}": v for k, v in state.strategy_state.items()})
    meta = dict(state.meta, round=state.round)
    payload["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        if path.is_file():
            # the previous one first, as a link renamed into place: checkpoint.npz exists at every moment
            with atomic_path(path.with_name(PREVIOUS_NAME)) as previous_tmp:
                os.link(path, previous_tmp)
    return path


class CorruptCheckpointError(RuntimeError):
    """Neither the checkpoint nor the previous one can be read."""


def load_checkpoint(results_dir: Path, log: Callable[[str], None] = print) -> ServerState:
    """Read the checkpoint of a results folder, or the previous one (saying so through `log`) when
    the newest is unreadable; a clear error if there is none or neither can be read."""
    path = Path(results_dir) / CHECKPOINT_NAME
    previous = path.with_name(PREVIOUS_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: nothing to resume")
    try:
        return _read(path)
    except _UNREADABLE as err:
        problem = f"{path} is unreadable ({type(err).__name__}: {err})"
    if not previous.is_file():
        raise CorruptCheckpointError(f"{problem}, and there is no {PREVIOUS_NAME} to fall back to")
    try:
        state = _read(previous)
    except _UNREADABLE as err:
        raise CorruptCheckpointError(f"{problem}, and so is {previous} ({type(err).__name__}: {err})") from err
    log(f"WARNING: {problem}; resuming from {previous} (after round {state.round}), the round after it runs again")
    return state


# what a damaged npz raises: bad zip structure, a member's CRC, a truncated member, broken meta
_UNREADABLE = (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, UnicodeDecodeError)


def _read(path: Path) -> ServerState:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode("utf-8"))
        groups: dict[str, dict[str, np.ndarray]] = {"global": {}, "best": {}, "strategy": {}}
        for key in data.files:
            if key == "meta":
                continue
            group, name = key.split("/", 1)
            groups[group][name] = data[key]
    return ServerState(
        round=int(meta.pop("round")),
        global_arrays=groups["global"],
        best_arrays=groups["best"],
        strategy_state=groups["strategy"],
        meta=meta,
    )
