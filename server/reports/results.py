"""The results folder of one federation run.

    <results>/federation.yaml      the configuration the run used (copy)
    <results>/status.json          phase, last complete round, and the error if the run stopped
    <results>/statistics.json      federated statistics: clinical standardisation, category sets,
                                   patients and events per site and endpoint
    <results>/site_metrics.csv     one row per (round, phase, site, metric): train losses, validation
                                   and held-out metrics - every site, every round
    <results>/rounds.jsonl         one JSON object per round (sites responding, aggregated metrics,
                                   blend weights, bytes, timings)
    <results>/summary.json         the final result: best round, held-out metrics of the selected model
    <results>/tensorboard/         the same per-round metrics as TensorBoard events (stsfl.server.reports.tracking)
    <results>/checkpoint.npz       see stsfl.server.federation.checkpoint (and checkpoint.prev.npz, the one before)
    <results>/model_final.npz, model_selected.npz   global weights after the last / selected round

Files are rewritten from the in-memory history after each round, so a resumed run produces the
same files as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stsfl.common.atomic_file import atomic_path, write_text_atomic
from stsfl.common.config import read_yaml
from stsfl.common.config.security import absolute_security_paths
from stsfl.server.reports.tracking import write_tensorboard

SITE_METRIC_FIELDS = ("round", "phase", "site", "metric", "value")


class ResultsFolder:
    """Writes the files above; `history` is the list of per-round records kept in the checkpoint."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def copy_config(self, config_path: Path) -> None:
        """The YAML as it is, or - when its `security` paths are relative - with them made
        absolute, so that `sts-server --resume` finds the certificates from the copy."""
        target = self.root / "federation.yaml"
        if Path(config_path).resolve() == target.resolve():
            return
        data = read_yaml(config_path)
        fixed = absolute_security_paths(data, config_path)
        if fixed is data:
            shutil.copyfile(config_path, target)
        else:
            write_text_atomic(target, yaml.safe_dump(fixed, sort_keys=False))

    def write_status(self, phase: str, **fields: Any) -> None:
        write_text_atomic(self.root / "status.json", json.dumps({"phase": phase, **fields}, indent=2) + "\n")

    def write_json(self, name: str, data: Any) -> None:
        write_text_atomic(self.root / name, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """site_metrics.csv, rounds.jsonl and the TensorBoard store from the per-round records."""
        rows = []
        for record in history:
            for phase in ("train", "evaluate"):
                for site, metrics in sorted(record.get(f"{phase}_sites", {}).items()):
                    for metric, value in sorted(metrics.items()):
                        rows.append((record["round"], phase, site, metric, value))
        with atomic_path(self.root / "site_metrics.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(SITE_METRIC_FIELDS)
            writer.writerows(rows)
        write_text_atomic(self.root / "rounds.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
        write_tensorboard(self.root, history)

    def write_model(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        with atomic_path(self.root / name) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def read_site_metrics(root: Path) -> list[dict[str, Any]]:
    """site_metrics.csv as dicts (round as int, value as float)."""
    with open(Path(root) / "site_metrics.csv", newline="", encoding="utf-8") as fh:
        return [dict(r, round=int(r["round"]), value=float(r["value"])) for r in csv.DictReader(fh)]
