"""Experiment tracking: the per-round aggregates of a run in a local TensorBoard event store.

    <results>/tensorboard/events.out.tfevents.*     one event file, step = round

    tensorboard --logdir results/        every run folder under results/ is one run to compare

Tags (all scalars, step = round):
    train/<metric>                  events-weighted mean over the training sites (losses per head)
    blend/<head>                    the gradient-blending weight the round trained with
    site/<site>/<metric>            what each site reported: train-* when it trained, eval-time
                                    metrics (c-harrell-os, auc-365d-os, ibs-os, ...) when it evaluated
    round/<name>                    selection score, round and wait time, model size in bytes

TensorBoard rather than MLflow: the store is plain files next to the other results (no tracking
server or database at the coordinator), and the `tensorboard` package adds little beyond the
protobuf/grpc that Flower already brings, whereas MLflow pulls a web stack (Flask, SQLAlchemy,
alembic, ...). The store is rewritten from the
in-memory history after every round, like rounds.jsonl, so a resumed run has the same events as an
uninterrupted one (appending would repeat the rounds before the crash).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stsfl.common.site_metrics import events_weighted_mean

TRACKING_DIR = "tensorboard"
# Per-site metrics that are bookkeeping, not results: left out of the store (as are the km-* points
# of the risk-group curves: a curve per round is for the report, not a scalar to follow).
SKIPPED_SITE_METRICS = ("bytes-up", "bytes-down", "time-serialise-s")


def round_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The scalars of one round record (rounds.jsonl), keyed by tag."""
    scalars: dict[str, float] = {}
    train = record.get("train_sites", {})
    for key in sorted({k for m in train.values() for k in m if k.startswith(("train-loss-", "val-loss-"))}):
        value = events_weighted_mean(train, key, skip_zero=key.startswith("val-"))
        if value is not None:
            scalars[f"train/{key}"] = value
    for head, weight in (record.get("blend_weights") or {}).items():
        scalars[f"blend/{head}"] = float(weight)
    for phase in ("train_sites", "evaluate_sites"):
        for site, metrics in record.get(phase, {}).items():
            for key, value in metrics.items():
                if key not in SKIPPED_SITE_METRICS and not key.startswith("km-"):
                    scalars[f"site/{site}/{key}"] = float(value)
    for key in ("selection_score", "time_round_s", "time_wait_s", "float32_bytes"):
        if record.get(key) is not None:
            scalars[f"round/{key}"] = float(record[key])
    return scalars


def write_tensorboard(root: Path, history: list[dict[str, Any]]) -> Path:
    """(Re)write <root>/tensorboard/ from the per-round records; returns the folder.

    TensorBoard's own event writer, not torch.utils.tensorboard: same files, without importing
    torch into a coordinator that may not need it (the linear-Cox task)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logdir = Path(root) / TRACKING_DIR
    logdir.mkdir(parents=True, exist_ok=True)
    for old in logdir.glob("events.out.tfevents.*"):
        old.unlink()
    writer = EventFileWriter(str(logdir))
    try:
        for record in history:
            values = [Summary.Value(tag=tag, simple_value=value) for tag, value in round_scalars(record).items()]
            writer.add_event(Event(wall_time=time.time(), step=int(record["round"]), summary=Summary(value=values)))
    finally:
        writer.close()
    return logdir
