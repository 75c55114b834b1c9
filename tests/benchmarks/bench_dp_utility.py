"""The utility cost of DP-SGD: held-out-centre C-index of FedAvg without DP and with every training
site at a privacy budget of epsilon 8, 3 and 1 (delta 1e-5), on the default synthetic cohort.

Every run is a real federation of our ServerApp and ClientApp on Flower's simulation engine
(`sts-server --simulate`), the network with group norm (`model_norm: group`: DP-SGD needs
per-patient gradients) in all runs, the no-DP one included. A DP site calibrates its noise so that
the federation's planned epochs spend exactly its budget (stsfl.client.training.privacy). The last centre is
held out; its C-index per endpoint (Harrell, 95 % percentile bootstrap) is scored here on all its
usable patients, next to the epsilon each site reports after the last round.

    python tests/benchmarks/bench_dp_utility.py --cohort data/synthetic [--rounds 10] [--local-epochs 2]
        [--epsilons 8 3 1] [--no-n4] [--cache-dir DIR]

Prints a table and writes tests/benchmarks/results/dp_utility.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from bench_fed_strategies import VALIDATION_FRACTION, Scorer, load_global, log, write_inputs
from rich.console import Console
from rich.table import Table

from stsfl.common.config import SiteConfig, load_config, load_schema
from stsfl.server.cli import run_federation
from stsfl.tasks.multimodal.site import MultimodalSite

RESULTS = Path(__file__).parent / "results" / "dp_utility.json"
LEARNING_RATE = 0.01
DELTA = 1e-5


def dp_site_yamls(site_yamls: list[Path], epsilon: float | None, work: Path) -> list[Path]:
    """Copies of the site YAMLs with `privacy` set (None: no DP)."""
    out = []
    for path in site_yamls:
        data = yaml.safe_load(path.read_text())
        if epsilon is not None:
            data["privacy"] = {"dp": True, "epsilon_budget": epsilon, "delta": DELTA, "max_grad_norm": 1.0}
        target = work / f"sites-{label(epsilon)}" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(data))
        out.append(target)
    return out


def label(epsilon: float | None) -> str:
    return "no-dp" if epsilon is None else f"eps-{epsilon:g}"


def run(epsilon: float | None, site_yamls: list[Path], preset: Path, args) -> Path:
    names = [p.stem for p in site_yamls]
    config = {
        # a new federation name per invocation: each site keeps a privacy ledger per federation name
        "name": f"bench-dp-{label(epsilon)}-{args.stamp}",
        "task": "multimodal",
        "preset": str(preset),
        "model_norm": "group",
        "sites": names,
        "holdout": [names[-1]],
        "strategy": "fedavg",
        "rounds": args.rounds,
        "train": {"epochs_per_round": args.local_epochs, "lr": LEARNING_RATE, "seed": args.seed, "schedule": "constant"},
        "validation_fraction": VALIDATION_FRACTION,
        "min_sites": len(names) - 1,
        "eval_every": args.rounds,
        "round_timeout_s": 3600,
        "wait_for_sites_s": 600,
        "prediction": {"baseline": False},
        "site_outputs": {"enabled": False},
        "simulation": {"site_configs": {p.stem: str(p) for p in site_yamls}, "cpus": 2, "threads_per_site": 1},
    }
    path = args.work / f"{label(epsilon)}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    results = args.work / f"results-{label(epsilon)}"
    run_federation(path, results, simulate=True, echo=lambda line: log(f"{label(epsilon)}: {line}"))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[8.0, 3.0, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=500)
    parser.add_argument("--no-n4", action="store_true")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/stsfl-bench-dp"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.stamp = time.strftime("%Y%m%d-%H%M%S")
    torch.set_num_threads(1)
    start = time.perf_counter()

    site_yamls, preset_path = write_inputs(args.cohort, args.work, args.preset, args.no_n4, args.cache_dir)
    schema = load_schema()
    holdout = MultimodalSite(
        load_config(site_yamls[-1], SiteConfig),
        site_yamls[-1],
        str(preset_path),
        schema,
        args.seed,
        VALIDATION_FRACTION,
        norm="group",
    )
    scorer = Scorer(holdout, args.cohort / "ground_truth.csv", args.n_boot, args.seed)
    runs: dict[str, dict] = {}
    for epsilon in [None, *args.epsilons]:
        t0 = time.perf_counter()
        results = run(epsilon, dp_site_yamls(site_yamls, epsilon, args.work), preset_path, args)
        statistics = json.loads((results / "statistics.json").read_text())["global"]
        history = [json.loads(line) for line in (results / "rounds.jsonl").read_text().splitlines()]
        spent = {s: m.get("dp-epsilon") for s, m in history[-1]["train_sites"].items()}
        model = load_global(results, "model_final.npz", holdout.preset, schema, args.seed)
        runs[label(epsilon)] = {
            "epsilon_budget": epsilon,
            "heldout": scorer.risk(label(epsilon), model, statistics),
            "epsilon_spent": spent,
            "seconds": time.perf_counter() - t0,
        }
        log(f"{label(epsilon)}: {runs[label(epsilon)]}")

    table = Table(
        title=f"DP-SGD utility: held-out {holdout.prepared.name}, FedAvg {args.rounds} rounds x "
        f"{args.local_epochs} epochs, group norm, delta {DELTA:g}, clip 1.0"
    )
    table.add_column("budget")
    for e in scorer.endpoints:
        table.add_column(f"C {e} [95% CI]")
    table.add_column("epsilon spent (max over sites)")
    table.add_column("seconds")
    for name, r in runs.items():
        spent = [v for v in r["epsilon_spent"].values() if v is not None]
        table.add_row(
            name,
            *[
                f"{r['heldout'][e]['c']:.3f} [{r['heldout'][e]['low']:.3f}, {r['heldout'][e]['high']:.3f}]"
                for e in scorer.endpoints
            ],
            f"{max(spent):.2f}" if spent else "-",
            f"{r['seconds']:.0f}",
        )
    oracle = scorer.oracle()
    if oracle:
        table.add_row("oracle", *[f"{oracle[e]:.3f}" for e in scorer.endpoints], "", "")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "cohort": str(args.cohort),
                "holdout": holdout.prepared.name,
                "rounds": args.rounds,
                "local_epochs": args.local_epochs,
                "delta": DELTA,
                "max_grad_norm": 1.0,
                "model_norm": "group",
                "n4": not args.no_n4,
                "runs": runs,
                "oracle": oracle,
                "seconds": time.perf_counter() - start,
                "mean_c": {n: float(np.mean([v["c"] for v in r["heldout"].values()])) for n, r in runs.items()},
            },
            indent=1,
        )
    )
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
