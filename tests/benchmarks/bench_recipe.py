"""The shipped defaults, untuned: does the federated network beat the federated clinical Cox model?

For each held-out centre and seed, one multimodal federation over the other centres with nothing
but the sites, the held-out centre and the seed set (FederationConfig's defaults, the preset's
recipe: 20 rounds, the clinical Cox initialisation, blending, selection). Scored at the held-out
centre: Harrell's C of the selected network, of the federated clinical Cox model (the clinical_init
phase's fit on the clinical variables alone: the same Newton fit a clinical-only federation would
make), of the linear Cox model the network started from (the clinical variables and the MRI
radiomics of the schema: "start"), the oracle (the generator's true log-hazard) and the paired
bootstrap differences network - clinical Cox and network - start; Spearman's rho of each image head's log-risk with its true
component (ground_truth.csv os_mri, os_wsi, ...). The federation runs in process (the real
orchestrator and ClientApp handlers over an in-process grid), so the times are the computation's.

    python tests/benchmarks/bench_recipe.py COHORT [--holdout center_2 ...] [--seeds 0 1] [--no-n4]
        [--arms blended unblended] [--threads 1] [--cache-dir DIR] [--out tests/benchmarks/results/recipe.json]

--no-n4 turns off N4 bias correction in preprocessing (speed); it does not touch the recipe.
--arms: `blended` is the shipped defaults; `unblended` is the same federation with
`train.blend_mode: off` (the one setting changed), for the blended-vs-unblended comparison.
A run whose results folder (under --work) holds summary.json is scored again without training.
Each run's held-out risks go to heldout_risks.npz in its results folder (for
summarise_recipe_loco.py). Prints one table and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the in-process grid

from bench_fed_strategies import Scorer, log, write_inputs  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402
from inprocess_grid import InProcessGrid  # noqa: E402

from stsfl.common.config import FederationConfig, SiteConfig, load_config, load_schema  # noqa: E402
from stsfl.common.params import load_arrays, numpy_to_arrays  # noqa: E402
from stsfl.common.tasks import server_side  # noqa: E402
from stsfl.server.orchestrator import Federation  # noqa: E402
from stsfl.server.phases.clinical_init_phase import clinical_only_arrays, run_clinical_init  # noqa: E402
from stsfl.server.phases.statistics_phase import run_statistics_phase  # noqa: E402
from stsfl.tasks.multimodal.site import MultimodalSite  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "recipe.json"


ARMS = {"blended": {}, "unblended": {"blend_mode": "off"}}


def run_tag(holdout: str, seed: int, arm: str) -> str:
    return f"{holdout}-seed{seed}" + ("" if arm == "blended" else f"-{arm}")


def federation_yaml(work: Path, sites: list[Path], holdout: str, seed: int, preset: Path, arm: str) -> Path:
    """The federation a new consortium writes: sites, the held-out centre, the seed; nothing tuned
    (the unblended arm also turns blending off)."""
    names = [p.stem for p in sites]
    tag = run_tag(holdout, seed, arm)
    body = {
        "name": f"recipe-{tag}",
        "preset": str(preset),
        "sites": names,
        "holdout": [holdout],
        "train": {"seed": seed, **ARMS[arm]},
        "site_outputs": {"enabled": False},
        "prediction": {"baseline": False},
    }
    path = work / f"federation-{tag}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def head_correlations(scorer: Scorer, model: torch.nn.Module, statistics: dict, truth_csv: Path) -> dict[str, float]:
    """Spearman's rho of each image head's log-risk with the true component of its modality."""
    from stsfl.client.data.site_dataset import SiteDataset, site_collate
    from stsfl.client.training.trainer import evaluate, make_loader
    from stsfl.common.clinical_stats import GlobalClinicalStats

    site = scorer.site
    dataset = SiteDataset(site.prepared, GlobalClinicalStats.from_dict(statistics), pids=scorer.pids)
    result = evaluate(model, make_loader(dataset, 8, site_collate(site.preset), shuffle=False))
    truth = pd.read_csv(truth_csv, dtype={"patient_id": str}).set_index(["centre", "patient_id"])
    out = {}
    for k, endpoint in enumerate(scorer.endpoints):
        for head in ("mri", "wsi"):
            column = f"{endpoint}_{head}"
            if head not in result.risks or column not in truth.columns:
                continue
            true = truth.loc[[(site.prepared.name, pid) for pid in result.pids], column].to_numpy()
            out[f"{endpoint}_{head}"] = float(spearmanr(result.risks[head][:, k], true).statistic)
    return out


def save_risks(path: Path, scorer: Scorer) -> None:
    """The held-out patients' outcomes and fused log-risks [N, K] of every scored model, and the oracle's."""
    arrays = {f"risk_{method}": risk for method, risk in scorer.risks.items()}
    if scorer.truth is not None:
        arrays["risk_oracle"] = scorer.truth
    np.savez(
        path,
        pids=np.asarray(scorer.pids),
        endpoints=np.asarray(scorer.endpoints),
        time=scorer.time,
        event=scorer.event,
        observed=scorer.observed,
        **arrays,
    )


def one_run(cohort: Path, sites: list[Path], preset: Path, holdout: str, seed: int, arm: str, work: Path, n_boot: int) -> dict:
    config = federation_yaml(work, sites, holdout, seed, preset, arm)
    fed = load_config(config, FederationConfig)
    grid = InProcessGrid({p.stem: p for p in sites})
    results = work / f"results-{run_tag(holdout, seed, arm)}"
    t0 = time.monotonic()
    run = Federation(grid, fed, config, results, server_side(fed), log=log)
    run.ctx.messenger.sites.wait_for(fed.sites, 600, 600)
    start = run_statistics_phase(run.ctx)
    run_clinical_init(run.ctx, start)
    seconds = None  # a finished run is scored again without training: its time is in its log, not here
    if (results / "summary.json").is_file():
        summary = json.loads((results / "summary.json").read_text())
    else:
        summary = Federation(grid, fed, config, results, server_side(fed), log=log).run()
        seconds = time.monotonic() - t0
    site_yaml = next(p for p in sites if p.stem == holdout)
    held_out = MultimodalSite(load_config(site_yaml, SiteConfig), site_yaml, str(preset), load_schema(), seed, 0.0)
    scorer = Scorer(held_out, cohort / "ground_truth.csv", n_boot, seed)
    statistics = start.meta["statistics"]
    scores = {}
    # the clinical-only Cox model (the comparator) and, with radiomics in the schema, the linear start
    for name, arrays in (("clinical_cox", clinical_only_arrays(start) or start.global_arrays), ("start", start.global_arrays)):
        model = held_out.build_model(statistics, seed)
        load_arrays(model, numpy_to_arrays(arrays))
        scores[name] = scorer.risk(name, model, statistics)
    network = held_out.build_model(statistics, seed)
    with np.load(results / "model_selected.npz") as selected:
        load_arrays(network, numpy_to_arrays({k: selected[k] for k in selected.files}))
    scores["network"] = scorer.risk("network", network, statistics)
    save_risks(results / "heldout_risks.npz", scorer)
    return {
        "holdout": holdout,
        "seed": seed,
        "arm": arm,
        "risks": str((results / "heldout_risks.npz").resolve()),
        "seconds": seconds,
        "selected_round": summary["selected_round"],
        "warnings": summary.get("warnings", []),
        "scores": scores,
        "oracle": scorer.oracle(),
        "difference": scorer.difference("network", "clinical_cox"),
        "difference_start": scorer.difference("network", "start"),
        "head_rho": head_correlations(scorer, network, statistics, cohort / "ground_truth.csv"),
        "blend_weights": summary.get("blend_weights"),
        "network_share": {e: c["share"] for e, c in (summary.get("network_share") or {}).items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--holdout", nargs="+", help="held-out centres (default: each centre in turn)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["blended"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--no-n4", action="store_true")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/out/recipe"))
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    # Messages made outside a Flower process need the identity a ServerApp process has.
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = 1, 1, 0
    torch.set_num_threads(args.threads)
    sites, preset = write_inputs(args.cohort, args.work, "cpu-small", args.no_n4, args.cache_dir)
    holdouts = args.holdout or [p.stem for p in sites]
    runs = []
    for holdout in holdouts:
        for seed in args.seeds:
            for arm in args.arms:
                log(f"held out {holdout}, seed {seed}, {arm}")
                runs.append(one_run(args.cohort, sites, preset, holdout, seed, arm, args.work, args.n_boot))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"cohort": str(args.cohort), "n4": not args.no_n4, "runs": runs}, indent=1))
    table = Table(title=f"shipped defaults, held-out Harrell's C ({args.cohort.name})")
    for column in (
        "held out",
        "seed",
        "arm",
        "endpoint",
        "network",
        "clinical Cox",
        "network - Cox [95% CI]",
        "oracle",
        "rho mri / wsi",
        "round",
        "minutes",
    ):
        table.add_column(column)
    for run in runs:
        for endpoint, net in run["scores"]["network"].items():
            d = run["difference"][endpoint]
            rho = " / ".join(f"{run['head_rho'].get(f'{endpoint}_{h}', float('nan')):.2f}" for h in ("mri", "wsi"))
            table.add_row(
                run["holdout"],
                str(run["seed"]),
                run["arm"],
                endpoint,
                f"{net['c']:.3f}",
                f"{run['scores']['clinical_cox'][endpoint]['c']:.3f}",
                f"{d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]",
                f"{(run['oracle'] or {}).get(endpoint, float('nan')):.3f}",
                rho,
                str(run["selected_round"]),
                "-" if run["seconds"] is None else f"{run['seconds'] / 60:.1f}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
