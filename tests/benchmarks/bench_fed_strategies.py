"""Strategies on the default synthetic cohort: held-out-centre C-index of local-only, FedAvg,
FedProx, FedAdam, FedBN and pooled training of the same network, next to the oracle.

The last centre is held out (as `stsfl demo` does; --holdout CENTRE holds out another); the
others train. Every federated strategy is a real run of our ServerApp and ClientApp on Flower's
simulation engine (`sts-server
--simulate`: one virtual SuperNode per centre, 2 CPUs, 1 thread per site), with the product's
defaults (events weighting, server-side gradient blending, model selection on the training
sites' fused validation loss). Pooled and local-only train the same network (same preset, seed,
initial weights, train / validation split by patient hash) in this process with `train_local`,
for as many epochs as the federation's rounds x local epochs, selecting the epoch on validation.

All models are scored on every usable patient of the held-out centre: Harrell's C per endpoint
(OS, DM) with a 95 % percentile-bootstrap interval, the oracle C (Harrell's C of the true
log-hazard from ground_truth.csv) on the same patients, and for the best federated strategy the
paired-bootstrap difference to pooled (target: within 0.01 of pooled).

    python tests/benchmarks/bench_fed_strategies.py --cohort data/synthetic [--rounds 10] [--local-epochs 1]
        [--no-blending] [--no-n4] [--cache-dir DIR] [--strategies fedavg fedprox fedadam fedbn] [--seed S]
        [--lr-decay cosine] [--federated-lr LR] [--holdout CENTRE] [--no-local] [--no-pooled]

--lr-decay cosine: the federations' learning rate decays over the rounds (learning_rate_decay,
to 0.1 of the rate in the last round). --federated-lr: the federations' learning_rate (pooled and
local-only keep the preset's 0.01). Averaging K sites' updates moves the model about 1/K as far
as pooled SGD over the same epochs of the same data (each site takes 1/K of pooled's steps), so
K x 0.01 is the rate that matches pooled's progress per epoch. --no-local / --no-pooled leave
those trainings out (extra seeds or settings of one strategy; the difference to pooled then needs
pooled from another run).

Prints a table and writes tests/benchmarks/results/fed_strategies.json (progress lines on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.table import Table

from stsfl.client.data.site_dataset import SiteDataset, site_collate
from stsfl.client.lab.baselines import PooledDataset, oracle_log_hazard
from stsfl.client.training.trainer import evaluate, make_loader, train_local
from stsfl.common.clinical_features import clinical_dim
from stsfl.common.clinical_stats import GlobalClinicalStats, combine_clinical_sums
from stsfl.common.config import SiteConfig, load_config, load_preset, load_schema, without_n4
from stsfl.common.metrics import bootstrap_ci, harrell_c, harrell_c_difference
from stsfl.server.cli import run_federation
from stsfl.tasks.multimodal.model import FUSED, MultimodalCoxNet
from stsfl.tasks.multimodal.site import MultimodalSite

RESULTS = Path(__file__).parent / "results" / "fed_strategies.json"
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedbn")
LEARNING_RATE = 0.01  # the cpu-small preset's lr, for every method
VALIDATION_FRACTION = 0.2


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def write_inputs(cohort: Path, work: Path, preset_name: str, no_n4: bool, cache_dir: Path | None) -> tuple[list[Path], Path]:
    """Site YAMLs of the cohort's centres (sorted; optional cache folder per centre) and the preset YAML."""
    preset = load_preset(preset_name)
    if no_n4:
        preset = without_n4(preset, name=f"{preset.name}-no-n4")
    work.mkdir(parents=True, exist_ok=True)
    preset_path = work / "preset.yaml"
    preset_path.write_text(yaml.safe_dump(preset.model_dump(mode="json"), sort_keys=False))
    sites = []
    for centre_yaml in sorted(cohort.glob("*/site.yaml")):
        site = load_config(centre_yaml, SiteConfig)
        data = {"name": site.name, "root": str(centre_yaml.parent.resolve()), "bad_patient_policy": "skip"}
        if cache_dir is not None:
            data["cache_dir"] = str((cache_dir / site.name).resolve())
        path = work / "sites" / f"{site.name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(data))
        sites.append(path)
    return sites, preset_path


class Scorer:
    """Held-out scoring: Harrell's C with bootstrap CI per endpoint, the oracle, paired differences."""

    def __init__(self, holdout: MultimodalSite, truth_csv: Path, n_boot: int, seed: int):
        self.site, self.n_boot, self.seed = holdout, n_boot, seed
        self.endpoints = holdout.schema.endpoint_names
        self.pids = [p.pid for p in holdout.prepared.patients]
        self.truth = oracle_log_hazard(truth_csv, [(holdout.prepared.name, p) for p in self.pids], self.endpoints)
        self.risks: dict[str, np.ndarray] = {}

    def risk(self, method: str, model: torch.nn.Module, statistics: dict) -> dict[str, dict]:
        dataset = SiteDataset(self.site.prepared, GlobalClinicalStats.from_dict(statistics), pids=self.pids)
        loader = make_loader(dataset, self.site.preset.train.batch_size, site_collate(self.site.preset), shuffle=False)
        model.eval()
        result = evaluate(model, loader, self.site.preset.train.ties)
        assert result.pids == self.pids
        self.time, self.event, self.observed = result.time, result.event, result.observed.astype(bool)
        self.risks[method] = result.risks[FUSED]
        return self.scores(self.risks[method])

    def _endpoint(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.observed[:, k]
        return m, self.time[m, k], self.event[m, k]

    def scores(self, risk: np.ndarray) -> dict[str, dict]:
        out = {}
        for k, name in enumerate(self.endpoints):
            m, t, e = self._endpoint(k)
            r = risk[m, k]
            ci = bootstrap_ci(lambda i, t=t, e=e, r=r: harrell_c(t[i], e[i], r[i]), len(t), self.n_boot, seed=self.seed)
            out[name] = {"c": ci.estimate, "low": ci.low, "high": ci.high, "n": int(m.sum()), "events": int(e.sum())}
        return out

    def oracle(self) -> dict[str, float] | None:
        if self.truth is None:
            return None
        return {
            name: harrell_c(*self._endpoint(k)[1:], self.truth[self._endpoint(k)[0], k]) for k, name in enumerate(self.endpoints)
        }

    def difference(self, a: str, b: str) -> dict[str, dict]:
        out = {}
        for k, name in enumerate(self.endpoints):
            m, t, e = self._endpoint(k)
            d = harrell_c_difference(t, e, self.risks[a][m, k], self.risks[b][m, k], self.n_boot, self.seed)
            out[name] = {"estimate": d.estimate, "low": d.low, "high": d.high}
        return out


def new_model(preset, schema, seed: int) -> torch.nn.Module:
    """The federation's initial model (stsfl.tasks.multimodal.server.MultimodalServer builds it the same way)."""
    torch.manual_seed(seed)
    return MultimodalCoxNet(preset, clinical_dim(schema), len(schema.endpoints))


def train_central(sites: list[MultimodalSite], statistics: dict, epochs: int, seed: int, blending: bool) -> torch.nn.Module:
    """The same network trained on the union of `sites`' training splits, epoch selected on their validation splits."""
    preset = sites[0].preset
    stats = GlobalClinicalStats.from_dict(statistics)
    collate = site_collate(preset)
    train = PooledDataset([SiteDataset(s.prepared, stats, train=True, pids=s.train_pids, seed=seed) for s in sites])
    val = PooledDataset([SiteDataset(s.prepared, stats, pids=s.val_pids, seed=seed) for s in sites])
    cfg = preset.train.model_copy(
        update={"epochs": epochs, "lr": LEARNING_RATE, "seed": seed, **({} if blending else {"blend_mode": "off"})}
    )
    model = new_model(preset, sites[0].schema, seed)
    train_local(
        model,
        make_loader(train, cfg.batch_size, collate, shuffle=True, seed=seed),
        make_loader(val, cfg.batch_size, collate, shuffle=False),
        cfg,
        show_progress=False,
    )
    return model


def run_strategy(
    strategy: str,
    site_yamls: list[Path],
    preset: Path,
    rounds: int,
    local_epochs: int,
    blending: bool,
    seed: int,
    learning_rate: float,
    lr_decay: str,
    work: Path,
) -> Path:
    """One simulated federation; returns its results folder."""
    names = [p.stem for p in site_yamls]
    config = {
        "name": f"bench-{strategy}",
        "task": "multimodal",
        "preset": str(preset),
        "sites": names,
        "holdout": [names[-1]],
        "strategy": strategy,
        "rounds": rounds,
        "train": {
            "epochs_per_round": local_epochs,
            "lr": learning_rate,
            "seed": seed,
            "schedule": {"constant": "constant", "cosine": "warmup_cosine", "onecycle": "onecycle"}[lr_decay],
            **({"warmup_fraction": 0.0, "final_lr_fraction": 0.1} if lr_decay == "cosine" else {}),
            **({} if blending else {"blend_mode": "off"}),
            **({"prox_mu": 0.01} if strategy == "fedprox" else {}),
        },
        "validation_fraction": VALIDATION_FRACTION,
        "min_sites": len(names) - 1,
        "eval_every": 1,
        "round_timeout_s": 1800,
        "wait_for_sites_s": 600,
        "simulation": {"site_configs": {p.stem: str(p) for p in site_yamls}, "cpus": 2, "threads_per_site": 1},
    }
    path = work / f"{strategy}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    results = work / f"results-{strategy}"
    run_federation(path, results, simulate=True, echo=lambda line: log(f"{strategy}: {line}"))
    return results


def load_global(results: Path, name: str, preset, schema, seed: int) -> torch.nn.Module:
    model = new_model(preset, schema, seed)
    with np.load(results / name) as arrays:
        model.load_state_dict({k: torch.from_numpy(arrays[k]) for k in model.state_dict()})
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=1, help="per round; pooled / local train rounds x local epochs")
    parser.add_argument(
        "--no-blending",
        dest="blending",
        action="store_false",
        help="fixed uniform head weights everywhere (federation: blending: false; pooled / local: blend_mode off)",
    )
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", help="the centre held out (default: the last one)")
    parser.add_argument("--federated-lr", type=float, default=LEARNING_RATE, help="the federations' learning_rate")
    parser.add_argument(
        "--lr-decay",
        choices=("constant", "cosine", "onecycle"),
        default="constant",
        help="the federations' rate schedule over the whole run: constant, a cosine decay to 0.1 of the rate "
        "(train.schedule warmup_cosine without warm-up) or onecycle (the preset's default)",
    )
    parser.add_argument("--no-local", dest="local", action="store_false", help="skip local-only training")
    parser.add_argument("--no-pooled", dest="pooled", action="store_false", help="skip pooled training")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--no-n4", action="store_true", help="skip N4 in MRI preprocessing (as bench_baselines --no-n4)")
    parser.add_argument("--cache-dir", type=Path, help="preprocessing cache, one sub-folder per centre (default: the cohort's)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/stsfl-bench-strategies"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()

    site_yamls, preset_path = write_inputs(args.cohort, args.work, args.preset, args.no_n4, args.cache_dir)
    if args.holdout:
        centres = [p.stem for p in site_yamls]
        if args.holdout not in centres:
            parser.error(f"--holdout {args.holdout}: no such centre in {args.cohort} ({', '.join(centres)})")
        site_yamls.sort(key=lambda p: p.stem == args.holdout)  # stable: the held-out centre goes last
    schema = load_schema()
    sites = [
        MultimodalSite(load_config(p, SiteConfig), p, str(preset_path), schema, args.seed, VALIDATION_FRACTION)
        for p in site_yamls
    ]
    training, holdout = sites[:-1], sites[-1]
    preset = holdout.preset
    log(
        f"centres {[s.prepared.name for s in sites]}; held out {holdout.prepared.name} ({len(holdout.prepared.patients)} patients)"
    )
    scorer = Scorer(holdout, args.cohort / "ground_truth.csv", args.n_boot, args.seed)
    fed_statistics = combine_clinical_sums([s.prepared.clinical_sums() for s in training], schema).to_dict()
    methods: dict[str, dict] = {}

    epochs = args.rounds * args.local_epochs
    if args.pooled:
        t0 = time.perf_counter()
        model = train_central(training, fed_statistics, epochs, args.seed, args.blending)
        methods["pooled"] = {
            "heldout": scorer.risk("pooled", model, fed_statistics),
            "seconds": time.perf_counter() - t0,
            "epochs": epochs,
        }
        log(f"pooled: {methods['pooled']['heldout']}")

    local = {}
    for site in training if args.local else []:
        t0 = time.perf_counter()
        own = combine_clinical_sums([site.prepared.clinical_sums()], schema).to_dict()
        model = train_central([site], own, epochs, args.seed, args.blending)
        name = f"local:{site.prepared.name}"
        local[name] = {"heldout": scorer.risk(name, model, own), "seconds": time.perf_counter() - t0, "epochs": epochs}
        log(f"{name}: {local[name]['heldout']}")
    best_local = max(local, key=lambda n: np.mean([v["c"] for v in local[n]["heldout"].values()]), default=None)
    if best_local:
        methods["local-only (best site)"] = {**local[best_local], "site": best_local.split(":", 1)[1]}
        scorer.risks["local-only (best site)"] = scorer.risks[best_local]

    for strategy in args.strategies:
        t0 = time.perf_counter()
        results = run_strategy(
            strategy,
            site_yamls,
            preset_path,
            args.rounds,
            args.local_epochs,
            args.blending,
            args.seed,
            args.federated_lr,
            args.lr_decay,
            args.work,
        )
        summary = json.loads((results / "summary.json").read_text())
        statistics = json.loads((results / "statistics.json").read_text())["global"]
        selected = load_global(results, "model_selected.npz", preset, schema, args.seed)
        final = load_global(results, "model_final.npz", preset, schema, args.seed)
        methods[strategy] = {
            "heldout": scorer.risk(strategy, selected, statistics),
            "heldout_final_round": scorer.risk(f"{strategy}:final", final, statistics),
            "selected_round": summary["selected_round"],
            "federation_reported": summary["holdout_selected"][holdout.prepared.name],
            "seconds": time.perf_counter() - t0,
            "rounds": args.rounds,
        }
        log(f"{strategy}: selected round {summary['selected_round']}: {methods[strategy]['heldout']}")

    federated = [s for s in args.strategies if s in methods]
    best = max(federated, key=lambda n: np.mean([v["c"] for v in methods[n]["heldout"].values()]))
    diff = scorer.difference(best, "pooled") if args.pooled else None
    oracle = scorer.oracle()
    target = {e: bool(diff[e]["estimate"] >= -0.01) for e in scorer.endpoints} if diff else None

    table = Table(
        title=f"Held-out {holdout.prepared.name}: Harrell's C [95% bootstrap CI], {args.rounds} rounds x "
        f"{args.local_epochs} epoch(s) (pooled / local: {epochs} epochs), preset {preset.name}, "
        f"blending {'on' if args.blending else 'off'}"
    )
    table.add_column("method")
    for e in scorer.endpoints:
        table.add_column(f"C {e}")
    table.add_column("selected round")
    table.add_column("seconds")
    for name, m in {**methods, **{k: v for k, v in local.items() if k != best_local}}.items():
        cells = [
            f"{m['heldout'][e]['c']:.3f} [{m['heldout'][e]['low']:.3f}, {m['heldout'][e]['high']:.3f}]" for e in scorer.endpoints
        ]
        label = f"{name} ({m['site']})" if "site" in m else name
        table.add_row(label, *cells, str(m.get("selected_round", "")), f"{m['seconds']:.0f}")
    if oracle:
        table.add_row("oracle (true log-hazard)", *[f"{oracle[e]:.3f}" for e in scorer.endpoints], "", "")
    if diff:
        table.add_row(
            f"best federated ({best}) - pooled",
            *[f"{diff[e]['estimate']:+.3f} [{diff[e]['low']:+.3f}, {diff[e]['high']:+.3f}]" for e in scorer.endpoints],
            "",
            "",
        )
    Console().print(table)
    payload = {
        "cohort": str(args.cohort),
        "holdout": holdout.prepared.name,
        "training": [s.prepared.name for s in training],
        "preset": preset.name,
        "n4": not args.no_n4,
        "rounds": args.rounds,
        "local_epochs": args.local_epochs,
        "pooled_and_local_epochs": epochs,
        "blending": args.blending,
        "learning_rate": LEARNING_RATE,
        "federated_learning_rate": args.federated_lr,
        "learning_rate_decay": args.lr_decay,
        "seed": args.seed,
        "n_boot": args.n_boot,
        "cpus": os.cpu_count(),
        "engine": "flower simulation (sts-server --simulate)",
        "methods": methods,
        "local_sites": local,
        "oracle": oracle,
        "best_federated": best,
        "best_federated_minus_pooled": diff,
        "target_within_0.01_of_pooled": target,
        "seconds": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
