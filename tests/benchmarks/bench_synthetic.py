"""Benchmark: generate the default synthetic cohort; time, disk size, oracle C per centre and endpoint.

    python tests/benchmarks/bench_synthetic.py [--out DIR] [--config YAML] [--workers N]

Prints the cohort summary and writes tests/benchmarks/results/synthetic.json and a copy of the
cohort's preview.png (synthetic_preview.png; synthetic-<name>.* for a --config <name>.yaml). Without --out the cohort goes to a temporary folder
that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from rich.table import Table

from stsfl.client.lab.synthetic import generate_cohort, load_synth_config
from stsfl.client.lab.synthetic.summary import summary_table
from stsfl.common.console import console

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="where to write the cohort (default: a temporary folder)")
    parser.add_argument("--config", help="synth YAML (default: configs/synth.yaml)")
    parser.add_argument("--workers", type=int, help="override the config's worker processes")
    args = parser.parse_args()
    config = load_synth_config(args.config)
    if args.workers:
        config = config.model_copy(update={"workers": args.workers})

    # The default cohort's record is synthetic.json; another config's is synthetic-<config name>.json.
    name = "synthetic" if args.config is None else f"synthetic-{Path(args.config).stem}"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stsfl-bench-synth-") as scratch:
        out = args.out or Path(scratch) / "cohort"
        started = time.perf_counter()
        cohort = generate_cohort(config, out)
        seconds = time.perf_counter() - started
        if (out / "preview.png").is_file():
            shutil.copyfile(out / "preview.png", RESULTS_DIR / f"{name}_preview.png")

    console.print(summary_table(cohort))
    figures = Table(title="Generation")
    for column in ("patients", "workers", "CPU cores", "seconds", "s / patient", "disk (MB)", "MB / patient"):
        figures.add_column(column, justify="right")
    n = cohort["pooled"]["patients"]
    mb = cohort["disk_bytes"] / 1e6
    figures.add_row(
        str(n), str(config.workers), str(os.cpu_count()), f"{seconds:.0f}", f"{seconds / n:.2f}", f"{mb:.0f}", f"{mb / n:.2f}"
    )
    console.print(figures)

    record = {
        "benchmark": "synthetic",
        "config": args.config or "configs/synth.yaml",
        "workers": config.workers,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "seconds": round(seconds, 1),
        "disk_bytes": cohort["disk_bytes"],
        "patients": n,
        "centres": {
            name: {key: row[key] for key in ("patients", "with_mri", "with_wsi", "events", "oracle_c", "clinical_oracle_c")}
            for name, row in cohort["centres"].items()
        },
        "pooled": {key: cohort["pooled"][key] for key in ("events", "oracle_c", "clinical_oracle_c")},
    }
    results = RESULTS_DIR / f"{name}.json"
    results.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"wrote {results}")


if __name__ == "__main__":
    main()
