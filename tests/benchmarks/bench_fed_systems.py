"""Systems figures of a real loopback federation: round time split, bytes per round, scaling with sites.

For each number of sites N (default 2, 4, 8), starts a SuperLink (through `sts-server`'s
`run_federation`) and N `sts-client` processes on TCGA-BRCA region tables (regions are reused
under new site names beyond six), runs the clinical-only linear Cox task for a few rounds and
reads the split of each round from the results folder:

- local work: the ClientApp's data loading + training + serialisation (`time-*-s` in the reply),
- server wait: from sending the train messages to the last reply (includes the above, the
  SuperNodes' 3 s polling, the ClientApp process start and its imports, and transport),
- aggregation: the server step;
- bytes down / up per site and round, against the float32 size of the parameters.

    python tests/benchmarks/bench_fed_systems.py [--sites 2 4 8] [--rounds 3]

Prints a table and writes tests/benchmarks/results/fed_systems.json. Timings are noisy on a
shared 2-core machine; the `paper`-preset split needs the multimodal task (not measured here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from stsfl.client.tcga_brca import N_REGIONS, write_region_sites
from stsfl.common.flower_procs import flower_env, free_port, spawn
from stsfl.server.cli import run_federation

REPO = Path(__file__).resolve().parents[2]
DATA = next((p / "shared" / "data" / "tcga_brca" for p in REPO.parents if (p / "shared" / "data" / "tcga_brca").is_dir()), None)
POLL_INTERVAL = 0.05


def site_yamls(root: Path, n_sites: int) -> list[Path]:
    """n_sites site YAMLs over the six region tables (site k uses region k mod 6)."""
    regions = write_region_sites(DATA, root / "regions")
    out = []
    for k in range(n_sites):
        region = regions[k % N_REGIONS]
        path = root / f"site_{k}.yaml"
        path.write_text(f"name: site_{k}\nroot: {region.parent / region.stem}\n", encoding="utf-8")
        out.append(path)
    return out


def measure(n_sites: int, rounds: int, workdir: Path) -> dict:
    yamls = site_yamls(workdir, n_sites)
    port = free_port()
    env = flower_env(workdir / "flwr-home", POLL_INTERVAL)
    config = workdir / "federation.yaml"
    names = [p.stem for p in yamls]
    config.write_text(
        f"name: systems-{n_sites}\ntask: linear-cox\nsites: [{', '.join(names)}]\nrounds: {rounds}\n"
        f"eval_every: {rounds}\nlocal_epochs: 1\nlearning_rate: 0.5\nclient_optimizer: sgd\n"
        f"min_sites: {n_sites}\nround_timeout_s: 300\nwait_for_sites_s: 300\n",
        encoding="utf-8",
    )
    clients = [
        spawn("sts-client", [sys.executable, "-m", "stsfl.client.cli", "--site", str(y), "--server", f"127.0.0.1:{port}",
                             "--log-dir", str(workdir / "logs")], workdir / "logs" / f"{y.stem}.out", env)
        for y in yamls
    ]
    try:
        run_federation(config, workdir / "results", port=port, task_poll_interval=POLL_INTERVAL, echo=lambda _: None)
    finally:
        for client in clients:
            client.stop()
    history = [json.loads(line) for line in (workdir / "results" / "rounds.jsonl").read_text().splitlines()]
    per_round = []
    for record in history:
        sites = record["train_sites"].values()
        local = [m["time-load-s"] + m["time-train-s"] + m["time-serialise-s"] for m in sites]
        per_round.append({
            "round_s": record["time_round_s"],
            "server_wait_s": record["time_wait_s"],
            "local_work_s_max": max(local),
            "aggregate_s": record["time_aggregate_s"],
            "bytes_down_per_site": next(iter(sites))["bytes-down"],
            "bytes_up_per_site": next(iter(sites))["bytes-up"],
            "float32_bytes": record["float32_bytes"],
        })
    train_rounds = per_round[:-1] or per_round  # the last round also holds the evaluation phase
    return {
        "sites": n_sites,
        "rounds": per_round,
        "median_train_round_s": float(np.median([r["round_s"] for r in train_rounds])),
        "median_local_work_s": float(np.median([r["local_work_s_max"] for r in per_round])),
        "median_aggregate_s": float(np.median([r["aggregate_s"] for r in per_round])),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fed_systems.json")
    args = parser.parse_args(argv)
    if DATA is None:
        sys.exit("TCGA-BRCA data not found (expected ../shared/data/tcga_brca next to the checkout)")
    results = []
    for n in args.sites:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(measure(n, args.rounds, Path(tmp)))
    table = Table(title="Loopback federation, linear Cox (40 float32 parameters), real processes")
    for col in ("sites", "train round (s)", "local work (s)", "aggregation (s)", "bytes down/up per site", "float32 bytes"):
        table.add_column(col)
    for r in results:
        first = r["rounds"][0]
        table.add_row(str(r["sites"]), f"{r['median_train_round_s']:.1f}", f"{r['median_local_work_s']:.3f}",
                      f"{r['median_aggregate_s']:.4f}", f"{first['bytes_down_per_site']:.0f}/{first['bytes_up_per_site']:.0f}",
                      f"{first['float32_bytes']:.0f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
