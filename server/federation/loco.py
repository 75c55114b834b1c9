"""Leave-one-centre-out (LOCO): one federation per centre, that centre held out, the others training.

`mode: loco` in the federation YAML (or `sts-server --config ... --loco`). The folds run one after
the other through the same machinery as a single federation (`run_fold`: sts-server's
`run_federation` on one SuperLink port, so the sites' `sts-client`s stay joined from fold to
fold). Results:

    <results>/federation.yaml            the LOCO configuration (copy)
    <results>/loco/<centre>/             one ordinary results folder per fold (its federation.yaml
                                         holds `holdout: [<centre>]`)
    <results>/loco.csv, loco.json        the external C-index (Harrell, Uno) per endpoint of every
                                         held-out centre, from its fold's selected model (selected
                                         on the training sites' validation loss, never on the centre)

A fold whose results folder says `done` is not run again, and a fold with a checkpoint is resumed,
so `sts-server --resume <results>` continues an interrupted LOCO run.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from stsfl.common.config import FederationConfig, parse_config, read_yaml
from stsfl.common.config.security import absolute_security_paths
from stsfl.common.site_metrics import reported_endpoints

RunFold = Callable[[Path, Path, bool], dict]  # (fold federation.yaml, fold results folder, resume) -> summary
LOCO_FIELDS = ("held_out", "endpoint", "c_harrell", "c_uno", "events", "patients", "selected_round")


def loco_config(config_path: Path, force: bool = False) -> tuple[dict[str, Any], FederationConfig]:
    """The YAML's data and its validated config, with `mode: loco` when `force` (the --loco flag):
    the same checks and messages as a YAML that says so."""
    # the folds' YAMLs are written elsewhere: certificate paths must not depend on where the YAML is
    data = absolute_security_paths(read_yaml(config_path) or {}, config_path)
    if force and isinstance(data, dict):
        data = {**data, "mode": "loco"}
    return data, parse_config(data, FederationConfig, str(config_path))


def fold_config(data: dict[str, Any], centre: str) -> dict[str, Any]:
    """One fold's federation: `centre` held out, its own name (sites keep per-federation state)."""
    return {**data, "mode": "single", "holdout": [centre], "name": f"{data.get('name', 'sts-federation')}-loco-{centre}"}


def _fold_done(results: Path) -> bool:
    try:
        return json.loads((results / "status.json").read_text(encoding="utf-8")).get("phase") == "done"
    except (OSError, ValueError):
        return False


def run_loco(
    config_path: Path, results_root: Path, run_fold: RunFold, echo: Callable[[str], None] = print, force: bool = False
) -> dict[str, Any]:
    """Run every fold (skipping finished ones, resuming interrupted ones); write and return the table."""
    data, fed = loco_config(config_path, force)
    results_root = Path(results_root)
    results_root.mkdir(parents=True, exist_ok=True)
    target = results_root / "federation.yaml"
    if Path(config_path).resolve() != target.resolve():
        target.write_text(yaml.safe_dump({**data, "mode": "loco"}, sort_keys=False), encoding="utf-8")
    summaries: dict[str, dict] = {}
    for k, centre in enumerate(fed.sites, start=1):
        fold_dir = results_root / "loco" / centre
        fold_dir.mkdir(parents=True, exist_ok=True)
        if _fold_done(fold_dir):
            echo(f"LOCO fold {k}/{len(fed.sites)}: {centre} held out - already done ({fold_dir})")
            summaries[centre] = json.loads((fold_dir / "summary.json").read_text(encoding="utf-8"))
            continue
        resume = (fold_dir / "checkpoint.npz").is_file()
        echo(f"LOCO fold {k}/{len(fed.sites)}: {centre} held out{' (resuming)' if resume else ''}; results in {fold_dir}")
        fold_yaml = fold_dir / "federation.yaml"
        if not resume:
            fold_yaml.write_text(yaml.safe_dump(fold_config(data, centre), sort_keys=False), encoding="utf-8")
        summaries[centre] = run_fold(fold_yaml, fold_dir, resume)
    return write_loco(results_root, loco_rows(summaries), fed)


def loco_rows(summaries: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per (held-out centre, endpoint) from the folds' summaries (their selected model)."""
    rows = []
    for centre, summary in summaries.items():
        metrics = (summary.get("holdout_selected") or {}).get(centre) or {}
        for endpoint in reported_endpoints(metrics):
            rows.append(
                {
                    "held_out": centre,
                    "endpoint": endpoint,
                    "c_harrell": metrics.get(f"c-harrell-{endpoint}", math.nan),
                    "c_uno": metrics.get(f"c-uno-{endpoint}", math.nan),
                    "events": int(metrics[f"eval-events-{endpoint}"]),
                    "patients": int(metrics.get("eval-patients", 0)),
                    "selected_round": summary.get("selected_round"),
                }
            )
    return rows


def loco_means(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per endpoint: mean and sd (across centres, where defined) of Harrell's and Uno's C."""
    out: dict[str, dict[str, float]] = {}
    for endpoint in sorted({r["endpoint"] for r in rows}):
        stats: dict[str, float] = {}
        for key in ("c_harrell", "c_uno"):
            values = [r[key] for r in rows if r["endpoint"] == endpoint and not math.isnan(r[key])]
            mean = sum(values) / len(values) if values else math.nan
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
            stats.update({f"{key}_mean": mean, f"{key}_sd": sd, f"{key}_centres": float(len(values))})
        out[endpoint] = stats
    return out


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def write_loco(root: Path, rows: list[dict[str, Any]], fed: FederationConfig) -> dict[str, Any]:
    """loco.csv (one row per held-out centre and endpoint) and loco.json (rows + means per endpoint)."""
    with open(root / "loco.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOCO_FIELDS)
        writer.writeheader()
        writer.writerows({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows)
    table = {
        "federation": fed.name,
        "strategy": fed.strategy,
        "rounds": fed.rounds,
        "centres": fed.sites,
        "rows": [{k: _json_number(v) for k, v in r.items()} for r in rows],
        "mean": {e: {k: _json_number(v) for k, v in s.items()} for e, s in loco_means(rows).items()},
        "folds": {c: f"loco/{c}" for c in fed.sites},
    }
    (root / "loco.json").write_text(json.dumps(table, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return table


def run_loco_command(config: Path, results: Path | None, port: int | None, force: bool, run_federation) -> int:
    """`sts-server --loco`: every fold through `run_federation` (sts-server's) on one SuperLink port,
    chosen now when free, so the sites' sts-clients rejoin each fold on the same address."""
    from stsfl.common.console import print_progress
    from stsfl.common.flower_procs import free_port

    _, fed = loco_config(config, force)
    port = port or fed.network.port or free_port(fed.network.host)
    table = run_loco(
        config,
        Path(results or fed.results_dir).resolve(),
        lambda cfg, res, resume: run_federation(cfg, res, port, resume=resume),
        force=force,
        echo=print_progress,
    )
    print_loco_table(table)
    return 0


def print_loco_table(table: dict[str, Any]) -> None:
    """The LOCO table on screen (rich): one row per held-out centre and endpoint, then the means."""
    from rich.table import Table

    from stsfl.common.console import console

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    out = Table(title=f"Leave-one-centre-out: external C-index ({table['strategy']}, {table['rounds']} rounds)")
    for column in ("held-out centre", "endpoint", "Harrell's C", "Uno's C", "events", "patients", "selected round"):
        out.add_column(column, justify="left" if column in ("held-out centre", "endpoint") else "right")
    for r in table["rows"]:
        out.add_row(
            r["held_out"],
            r["endpoint"],
            fmt(r["c_harrell"]),
            fmt(r["c_uno"]),
            str(r["events"]),
            str(r["patients"]),
            str(r["selected_round"]),
        )
    for endpoint, s in table["mean"].items():
        sd_h, sd_u = s["c_harrell_sd"], s["c_uno_sd"]
        out.add_row(
            "mean (sd)",
            endpoint,
            f"{fmt(s['c_harrell_mean'])} ({fmt(sd_h)})",
            f"{fmt(s['c_uno_mean'])} ({fmt(sd_u)})",
            "",
            "",
            "",
            style="bold",
        )
    console.print(out)
