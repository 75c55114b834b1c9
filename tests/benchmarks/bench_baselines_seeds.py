"""The baselines comparison over several seeds (each seed: its own 70/15/15 split and initialisation).

Reads the per-seed JSON files that bench_baselines.py wrote, prints per seed the blended network's
test C-index next to the clinical-only Cox model and the unblended network with the paired-bootstrap
95% CIs of the differences, and the mean over seeds; writes tests/benchmarks/results/baselines_seeds.json.

    python tests/benchmarks/bench_baselines.py COHORT --no-n4 --seed 0 --out tests/benchmarks/results/baselines.json
    python tests/benchmarks/bench_baselines.py COHORT --no-n4 --seed 1 --out tests/benchmarks/results/baselines_seed1.json
    python tests/benchmarks/bench_baselines.py COHORT --no-n4 --seed 2 --out tests/benchmarks/results/baselines_seed2.json
    python tests/benchmarks/bench_baselines_seeds.py tests/benchmarks/results/baselines{,_seed1,_seed2}.json

The seeds' test splits overlap (each is 15 % of the same cohort), so the per-seed intervals are not
independent evidence; the mean over seeds says how much of a single split's difference is the split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "baselines_seeds.json"
MODELS = ("cox_clinical", "mmnn_unblended", "mmnn_blended", "mmnn_blended_softmax")


def summarise(reports: list[dict]) -> dict:
    """{per_seed: [...], mean: {...}} from bench_baselines.py reports."""
    endpoints = reports[0]["endpoints"]
    per_seed = []
    for report in reports:
        row = {"seed": report["meta"]["seed"], "n_test": report["n_test"], "oracle_c": report["oracle_c"]}
        row["c"] = {
            m: {e: report["models"][m][e]["harrell_c"]["estimate"] for e in endpoints} for m in MODELS if m in report["models"]
        }
        row["blended_minus"] = report["blended_minus"]
        per_seed.append(row)
    mean = {
        "c": {
            m: {e: float(np.mean([r["c"][m][e] for r in per_seed])) for e in endpoints}
            for m in MODELS
            if all(m in r["c"] for r in per_seed)
        },
        "blended_minus": {
            other: {e: float(np.mean([r["blended_minus"][other][e]["estimate"] for r in per_seed])) for e in endpoints}
            for other in per_seed[0]["blended_minus"]
        },
    }
    return {"endpoints": endpoints, "seeds": [r["seed"] for r in per_seed], "per_seed": per_seed, "mean": mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    summary = summarise([json.loads(p.read_text()) for p in args.reports])
    table = Table(title="blended MMNN vs clinical Cox and unblended MMNN, test Harrell's C per seed")
    table.add_column("seed")
    for e in summary["endpoints"]:
        table.add_column(f"{e}: cox / unbl. / blended")
        table.add_column(f"{e}: blended - cox [95% CI]")
        table.add_column(f"{e}: blended - unbl. [95% CI]")

    def interval(d: dict) -> str:
        return f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"

    for row in summary["per_seed"]:
        cells = []
        for e in summary["endpoints"]:
            c = row["c"]
            cells += [
                f"{c['cox_clinical'][e]:.3f} / {c['mmnn_unblended'][e]:.3f} / {c['mmnn_blended'][e]:.3f}",
                interval(row["blended_minus"]["cox_clinical"][e]),
                interval(row["blended_minus"]["mmnn_unblended"][e]),
            ]
        table.add_row(str(row["seed"]), *cells)
    mean = summary["mean"]
    table.add_row(
        "mean",
        *[
            c
            for e in summary["endpoints"]
            for c in (
                f"{mean['c']['cox_clinical'][e]:.3f} / {mean['c']['mmnn_unblended'][e]:.3f} / {mean['c']['mmnn_blended'][e]:.3f}",
                f"{mean['blended_minus']['cox_clinical'][e]:+.3f}",
                f"{mean['blended_minus']['mmnn_unblended'][e]:+.3f}",
            )
        ],
    )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
