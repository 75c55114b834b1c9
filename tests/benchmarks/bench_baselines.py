"""The MMNN_STS comparison table on a synthetic cohort: test C-index per endpoint of every baseline
next to the oracle C-index, and the blended network's paired-bootstrap C-index differences against
the clinical-only Cox model and the unblended network. Also answers whether a larger Cox risk set
helps: `mmnn_blended` (risk set = batch of 8, as MMNN_STS) vs `mmnn_blended_site_risk` (risk set =
the whole training split).

    stsfl synth --out data/synthetic                      # the default cohort (configs/synth.yaml)
    python tests/benchmarks/bench_baselines.py data/synthetic [--epochs 20] [--n-boot 1000] [--no-n4]
writes tests/benchmarks/results/baselines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "baselines.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="*", default=None)
    # N4 costs ~12 s per patient on this CPU (cpu-small settings), ~85 % of preprocessing: off for a
    # time-boxed run; the z-scoring still removes the scanners' global scale.
    parser.add_argument("--no-n4", action="store_true", help="skip N4 bias correction in preprocessing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--checkpoints",
        type=Path,
        default=None,
        help="per-model training checkpoints under DIR/<model>: a stopped run resumes, a finished model is re-scored",
    )
    args = parser.parse_args()

    import torch
    from rich.console import Console

    from stsfl.client.lab.baselines import ALL_MODELS, report_table, run_baselines
    from stsfl.common.config import load_preset, load_schema, without_n4

    torch.set_num_threads(args.threads)
    preset = load_preset(args.preset)
    if args.no_n4:
        preset = without_n4(preset)
    train_cfg = preset.train if args.epochs is None else preset.train.model_copy(update={"epochs": args.epochs})
    start = time.perf_counter()
    report = run_baselines(
        [args.cohort],
        preset,
        load_schema(),
        mode="pooled",
        models=args.models or ALL_MODELS,
        train_cfg=train_cfg,
        truth_csv=args.cohort / "ground_truth.csv",
        n_boot=args.n_boot,
        seed=args.seed,
        checkpoint_root=args.checkpoints,
    )
    seconds = time.perf_counter() - start
    Console().print(report_table(report, f"pooled, preset {preset.name}, {train_cfg.epochs} epochs, n test = {report.n_test}"))
    payload = report.to_json()
    payload["meta"] = {
        "cohort": str(args.cohort),
        "preset": preset.name,
        "epochs": train_cfg.epochs,
        "batch_size": train_cfg.batch_size,
        "n_boot": args.n_boot,
        "seed": args.seed,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "n4": not args.no_n4,
        "seconds": round(seconds, 1),
        "checkpoints": None if args.checkpoints is None else str(args.checkpoints),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
