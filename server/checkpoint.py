"""The server's checkpoint: everything needed to continue a federation after the last complete round.

One file, `checkpoint.npz`, written to a temporary name and renamed over the old one (atomic on
POSIX), so a crash never leaves a half-written checkpoint. It holds the global weights
(`global/<name>`), the best-so-far weights (`best/<name>`), strategy state (`strategy/<name>`,
e.g. FedAdam's moments) and a JSON document `meta` (round, blend weights, federated statistics,
metrics history, best round).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT_NAME = "checkpoint.npz"


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
    tmp = path.with_name(f".{path.name}.tmp")
    payload: dict[str, np.ndarray] = {}
    payload.update({f"global/{k}": v for k, v in state.global_arrays.items()})
    payload.update({f"best/{k}": v for k, v in state.best_arrays.items()})
    payload.update({f"strategy/{k}": v for k, v in state.strategy_state.items()})
    meta = dict(state.meta, round=state.round)
    payload["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with open(tmp, "wb") as fh:
        np.savez(fh, **payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(results_dir: Path) -> ServerState:
    """Read the checkpoint of a results folder; a clear error if there is none."""
    path = Path(results_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: nothing to resume")
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
