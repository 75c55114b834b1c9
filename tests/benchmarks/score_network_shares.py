"""Every share of the network's part of the log-risk, scored again on finished bench_recipe.py runs.

`selection.network_shares` keeps, per endpoint, the share with the lowest validation loss at the
training sites (stsfl.server.phases.network_share). This takes each run's selected network before
the shares (its checkpoint), scales its fused-head rows by each share, and evaluates it with the
product's site code: the pooled validation loss at the training sites (the split of the run, from
its federation.yaml: validation fraction, seed, per-site minimum) and Harrell's C at the held-out
centre. Then it
compares the rules that could choose the share: the network as trained (1), the clinical Cox model
(0), the choice between the two ({0, 1}) and the grid (lowest validation loss among the shares),
as the mean held-out C over the runs of each arm.

    python tests/benchmarks/score_network_shares.py WORK [--shares 0 0.25 0.5 0.75 1]
        [--out tests/benchmarks/results/network_shares.json]

WORK: bench_recipe.py's --work folder (sites/, preset.yaml, results-*/). Prints one table and
writes the JSON (per run and share: validation losses, events, held-out C).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from stsfl.common.config import FederationConfig, SiteConfig, load_config, load_schema
from stsfl.common.params import load_arrays, numpy_to_arrays
from stsfl.server.federation.checkpoint import load_checkpoint
from stsfl.server.phases.network_share import choose_shares, with_shares
from stsfl.tasks.multimodal.site import MultimodalSite

RESULTS = Path(__file__).parent / "results" / "network_shares.json"


class Sites:
    """The work folder's sites, prepared once per (site, seed, validation split)."""

    def __init__(self, work: Path):
        self.preset, self.schema = str(work / "preset.yaml"), load_schema()
        self.yamls = {p.stem: p for p in sorted((work / "sites").glob("*.yaml"))}
        self._sites: dict[tuple, MultimodalSite] = {}

    def get(self, name: str, fed: FederationConfig, holdout: bool) -> MultimodalSite:
        """The site as the run `fed` split it (a held-out centre: every patient)."""
        rule = fed.selection
        split = {
            "validation_fraction": 0.0 if holdout else fed.validation_fraction,
            "min_validation_events": rule.min_site_validation_events,
            "max_validation_fraction": rule.max_validation_fraction,
        }
        key = (name, fed.recipe.train.seed, *split.values())
        if key not in self._sites:
            path = self.yamls[name]
            site = load_config(path, SiteConfig)
            self._sites[key] = MultimodalSite(site, path, self.preset, self.schema, fed.recipe.train.seed, **split)
        return self._sites[key]

    def evaluate(self, name: str, fed: FederationConfig, arrays: dict, statistics: dict, holdout: bool) -> dict[str, float]:
        site = self.get(name, fed, holdout)
        model = site.build_model(statistics, fed.recipe.train.seed)
        load_arrays(model, numpy_to_arrays(arrays))
        return site.evaluate(model, statistics, holdout=holdout)


def score_run(results: Path, sites: Sites, shares: list[float]) -> dict:
    fed = load_config(results / "federation.yaml", FederationConfig)
    statistics = json.loads((results / "statistics.json").read_text())["global"]
    checkpoint = load_checkpoint(results)  # saved after the last round, before the shares
    network = checkpoint.best_arrays or checkpoint.global_arrays
    endpoints = sites.schema.endpoint_names
    validation, held_out = {}, {}
    for share in shares:
        arrays = with_shares(network, [share] * len(endpoints))
        validation[share] = {s: sites.evaluate(s, fed, arrays, statistics, False) for s in fed.training_sites}
        (centre,) = fed.holdout
        metrics = sites.evaluate(centre, fed, arrays, statistics, True)
        held_out[share] = {e: metrics.get(f"c-harrell-{e}") for e in endpoints}
    minimum = fed.selection.min_share_events
    return {
        "run": results.name,
        "arm": "unblended" if fed.recipe.train.blend_mode == "off" else "blended",
        "choice": choose_shares(validation, endpoints, minimum),
        "either": choose_shares({s: validation[s] for s in (0.0, 1.0)}, endpoints, minimum),
        "held_out_c": {str(s): c for s, c in held_out.items()},
    }


def rule_means(runs: list[dict], endpoints: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """{arm: {rule: {endpoint: mean held-out C}}} for the rules 1, 0, {0, 1} and the grid."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for arm in sorted({r["arm"] for r in runs}):
        mine = [r for r in runs if r["arm"] == arm]
        rules = {
            "network as trained (1)": lambda r, e: 1.0,
            "clinical Cox model (0)": lambda r, e: 0.0,
            "network or clinical Cox ({0, 1})": lambda r, e: r["either"][e]["share"],
            "grid (lowest validation loss)": lambda r, e: r["choice"][e]["share"],
        }
        out[arm] = {
            name: {e: float(np.mean([r["held_out_c"][str(rule(r, e))][e] for r in mine])) for e in endpoints}
            for name, rule in rules.items()
        }
        out[arm]["mean grid share"] = {e: float(np.mean([r["choice"][e]["share"] for r in mine])) for e in endpoints}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shares = sorted(set(args.shares) | {0.0, 1.0})
    sites = Sites(args.work)
    runs = []
    for results in sorted(args.work.glob("results-*")):
        if (results / "summary.json").is_file():
            runs.append(score_run(results, sites, shares))
            print(f"{results.name}: held-out C by share {runs[-1]['held_out_c']}", flush=True)
    endpoints = sites.schema.endpoint_names
    means = rule_means(runs, endpoints)
    table = Table(title=f"mean held-out Harrell's C over the runs of each arm ({args.work})")
    for column in ("arm", "rule", *endpoints):
        table.add_column(column)
    for arm, rules in means.items():
        for rule, values in rules.items():
            table.add_row(arm, rule, *(f"{values[e]:.3f}" if "share" not in rule else f"{values[e]:.2f}" for e in endpoints))
    Console(width=160).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"work": str(args.work), "shares": shares, "runs": runs, "means": means}, indent=1))


if __name__ == "__main__":
    main()
