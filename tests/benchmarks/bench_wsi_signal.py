"""Is a synthetic cohort's slide signal in the cached tile embeddings, and at what scale?

The synthetic hazard has a WSI part (`os_wsi`, `dm_wsi` in ground_truth.csv: the standardised log
density of mitosis-like figures). This fits a ridge regression of that true part on per-patient bag
summaries (mean and sd of the tile embeddings over tiles, tile count), each standardised on the
training split, and reports the validation R^2, next to the raw between-patient spread of the bag
means (what the WSI sub-network sees: it does not standardise its input). Same 70/15/15 split as
bench_baselines.py. Reads the preprocessing cache; trains no network (seconds).

    python tests/benchmarks/bench_wsi_signal.py COHORT [--no-n4] [--seed 0]
writes tests/benchmarks/results/wsi_signal.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "wsi_signal.json"


def bag_summaries(cohort, split: str, truth) -> tuple[np.ndarray, np.ndarray]:
    """X [N, 2E + 1] (tile mean, tile sd, tile count), Y [N, 2] (true os_wsi, dm_wsi) of the split's patients with a slide."""
    xs, ys = [], []
    for site in cohort.sites:
        by_pid = {p.pid: p for p in site.patients}
        for pid in cohort.splits[site.name][split]:
            if by_pid[pid].wsi_key is None:
                continue
            bag = site.cache.load("wsi", by_pid[pid].wsi_key, ["bag"])["bag"]
            xs.append(np.concatenate([bag.mean(0), bag.std(0), [len(bag)]]))
            ys.append(truth.loc[pid, ["os_wsi", "dm_wsi"]].to_numpy(float))
    return np.asarray(xs), np.asarray(ys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-n4", action="store_true", help="match a bench_baselines.py --no-n4 cache")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import pandas as pd
    from rich.console import Console

    from stsfl.client.lab.baselines import discover_sites, load_cohort
    from stsfl.common.config import load_preset, load_schema, without_n4

    preset = load_preset(args.preset)
    if args.no_n4:
        preset = without_n4(preset)
    cohort = load_cohort(discover_sites([args.cohort]), preset, load_schema(), args.seed, progress=True)
    truth = pd.read_csv(args.cohort / "ground_truth.csv", dtype={"patient_id": str}).set_index("patient_id")
    x_train, y_train = bag_summaries(cohort, "train", truth)
    x_val, y_val = bag_summaries(cohort, "val", truth)
    embed = (x_train.shape[1] - 1) // 2
    mean, sd = x_train.mean(0), x_train.std(0) + 1e-12
    a_train = np.c_[(x_train - mean) / sd, np.ones(len(x_train))]
    a_val = np.c_[(x_val - mean) / sd, np.ones(len(x_val))]
    fits = {}
    for ridge in (1.0, 10.0, 100.0):
        beta = np.linalg.solve(a_train.T @ a_train + ridge * np.eye(a_train.shape[1]), a_train.T @ y_train)
        pred = a_val @ beta
        r2 = 1 - ((y_val - pred) ** 2).sum(0) / ((y_val - y_val.mean(0)) ** 2).sum(0)
        fits[str(ridge)] = {"val_r2": {"os_wsi": float(r2[0]), "dm_wsi": float(r2[1])}}
    result = {
        "n_train": len(x_train),
        "n_val": len(x_val),
        "embed_dim": embed,
        "raw_between_patient_sd_of_bag_means": float(sd[:embed].mean()),
        "raw_within_bag_tile_sd": float(x_train[:, embed : 2 * embed].mean()),
        "ridge_on_standardised_summaries": fits,
        "meta": {"cohort": str(args.cohort), "preset": preset.name, "seed": args.seed, "n4": not args.no_n4},
    }
    Console().print_json(json.dumps(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
