"""Competing risks at a synthetic cohort's held-out centre: crude cumulative incidence vs 1 - S, IBS, C.

Either the kept models of finished federations (`--federation RESULTS...`, bench_recipe.py's
results-<centre>-seed<k> folders: model_selected.npz with the selected round and its network shares,
the run's preset, clinical statistics and held-out centre; no training), or, without it, a POOLED
training (not federated, as bench_prediction): the preset's multimodal network
(gradient blending) on the training centres (80 % train, 20 % validation for epoch selection),
started, as the federation's recipe does, from the clinical Cox model (its fused head's clinical
term a ridge Cox fit on the training patients, the rest of the fused head zero);
the last centre is held out entirely. The baselines, including the cause-specific baseline of death
before dm / lr (OS log-risk as covariate), come from each training centre's monthly bins added as
the federation does (stsfl.client.prediction.model_export). At the held-out centre, at 3 and 5 years:

- dm and lr: calibration slope and O/E (cloglog pseudo-value fit against Aalen-Johansen,
  stsfl.common.cif_calibration) of the crude cumulative incidence, of 1 - S (the risk without
  death), of the same after recalibration at the centre without training (cross-fitted,
  stsfl.client.prediction.recalibration) and of the generator's true cumulative incidence; os likewise
  (1 - S against Kaplan-Meier);
- integrated Brier score (IPCW, the held-out centre's own censoring) of the network (incidence for
  dm and lr, 1 - S for os), of 1 - S for dm and lr, of the no-covariate Aalen-Johansen /
  Kaplan-Meier curve of the training centres, and of the truth;
- Harrell's and Uno's C of the network, of the clinical Cox model (lifelines, L2 0.1), of the
  true log-hazard (oracle) and of its clinical part alone (what a perfect clinical model ranks).

    stsfl synth --out /tmp/synth-default        (or a smaller cohort: --centers 3 --patients-min 60 ...)
    python tests/benchmarks/bench_competing_risks.py /tmp/synth-default [--epochs 20] [--no-n4] [--threads 1]
    python tests/benchmarks/bench_competing_risks.py COHORT --smoke     (the test suite's run: 1 epoch)
    python tests/benchmarks/bench_competing_risks.py COHORT --federation WORK/results-center_{0,1,2,3}-seed0
writes tests/benchmarks/results/competing_risks.json (or --out) and prints the table. With several
federations (leave one centre out, each centre held out in turn) the JSON has each run's report and
`pooled`: the calibration of all the runs' held-out patients together (each scored by the run that
held it out: a few hundred patients instead of one centre's hundred, whose slopes are mostly noise),
the mean IBS and C over the runs, and in how many runs the network's IBS is below AJ / KM's.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

RESULTS = Path(__file__).parent / "results"
HORIZONS_YEARS = (3.0, 5.0)


def _truth(cohort: Path, pids: list[str]):
    import pandas as pd

    truth = pd.read_csv(cohort / "ground_truth.csv", dtype={"patient_id": str}).set_index("patient_id")
    return truth.loc[pids]


def true_risk(truth, endpoint: str, competing: str | None, times_days: np.ndarray) -> np.ndarray:
    """The generator's risk [N, T]: crude cumulative incidence of `endpoint` with death (os) competing,
    integrated on a 1-day grid (latent Weibull times, independent given the patient), or 1 - S."""
    from stsfl.client.lab.synthetic.hazard import ENDPOINTS
    from stsfl.common.competing_risks import cumulative_incidence_on

    grid = np.arange(0.0, float(np.max(times_days)) + 2.0)

    def cumulative(name: str) -> np.ndarray:
        model = ENDPOINTS[name]
        base = (grid / 365.25 / model.weibull_scale_years) ** model.weibull_shape
        return np.outer(np.exp(truth[f"{name}_log_hazard"].to_numpy(float)), base)

    h_event = cumulative(endpoint)
    index = np.searchsorted(grid, times_days)
    if competing is None:
        return 1.0 - np.exp(-h_event[:, index])
    incidence, _ = cumulative_incidence_on(np.diff(h_event, axis=1), np.diff(cumulative(competing), axis=1))
    return incidence[:, index]


def _fit(predicted, data, horizon, pseudo) -> dict:
    from stsfl.common.cif_calibration import incidence_calibration

    fit = incidence_calibration(predicted, data.time, data.status, horizon, pseudo)
    return {"slope": fit.slope, "intercept": fit.intercept, "observed_expected": fit.observed_expected, "expected": fit.expected}


def calibration_rows(data, risks: dict[str, np.ndarray], horizons: np.ndarray, min_events: int) -> dict:
    """{"<y>y": {"observed", "events", method: fit}} per horizon; risks: {method: [n, H]}."""
    from stsfl.common.cif_calibration import aalen_johansen, pseudo_observations
    from stsfl.common.competing_risks import EVENT

    out = {}
    for j, (years, horizon) in enumerate(zip(HORIZONS_YEARS, horizons)):
        events = int(np.sum((data.status == EVENT) & (data.time <= horizon)))
        if events < min_events:
            out[f"{years:g}y"] = {"skipped": f"{events} events before {years:g} years (< {min_events})"}
            continue
        pseudo = pseudo_observations(data.time, data.status, horizon)
        row = {"observed": aalen_johansen(data.time, data.status, horizon), "events": events}
        out[f"{years:g}y"] = row | {name: _fit(r[:, j], data, horizon, pseudo) for name, r in risks.items()}
    return out


def brier_rows(data, train, risks_on_grid: dict[str, np.ndarray], times: np.ndarray) -> dict:
    """Integrated Brier scores {method: IBS} on `times`, plus the training centres' Aalen-Johansen /
    Kaplan-Meier curve for everyone (no covariates)."""
    from stsfl.common.cif_calibration import aalen_johansen, integrated_incidence_brier

    marginal = np.array([aalen_johansen(train.time, train.status, t) for t in times])
    risks = risks_on_grid | {"aalen_johansen_or_km": np.tile(marginal, (len(data.time), 1))}
    censor = (data.time, data.status)
    return {name: integrated_incidence_brier(data.time, data.status, r, times, censor) for name, r in risks.items()}


def concordance(data, train, scores: dict[str, np.ndarray]) -> dict:
    """Harrell's and Uno's C of each score [n] for the endpoint's event (competing events censor:
    the cause-specific ranking the network is trained for)."""
    from stsfl.common.metrics import harrell_c, uno_c

    event, train_event = data.status == 1, train.status == 1
    return {
        name: {"harrell": harrell_c(data.time, event, s), "uno": uno_c(train.time, train_event, data.time, event, s)}
        for name, s in scores.items()
    }


def start_from_clinical_cox(net, cohort, penalizer: float = 0.1) -> None:
    """As the federation's clinical_init phase (stsfl.server.phases.clinical_init_phase), pooled: the fused
    head's clinical term is a ridge Cox fit (lifelines) on the training patients' clinical vector per
    endpoint, the rest of the fused head zero, so training starts from the clinical Cox model."""
    import pandas as pd
    import torch
    from lifelines import CoxPHFitter

    if net.clinical_linear is None:
        return
    _, x, t, e, o = cohort.clinical_arrays("train")
    weight = np.zeros(tuple(net.clinical_linear.weight.shape))
    for k in range(weight.shape[0]):
        rows = o[:, k]
        varying = x[rows].std(0) > 0
        frame = pd.DataFrame(x[rows][:, varying], columns=[f"x{i}" for i in range(int(varying.sum()))])
        cox = CoxPHFitter(penalizer=penalizer).fit(frame.assign(T=t[rows, k], E=e[rows, k]), "T", "E")
        weight[k, varying] = cox.params_.to_numpy()
    with torch.no_grad():
        net.clinical_linear.weight.copy_(torch.as_tensor(weight, dtype=net.clinical_linear.weight.dtype))
        net.fused_head.weight.zero_()
        net.fused_head.bias.zero_()


def train_and_export(args, work: Path):
    """Prepare the sites, train the pooled network, write the model file (baselines from the training
    centres' bins). Returns (cohort, held-out site, training sites, model, net, stats, seconds)."""
    import torch

    from stsfl.client.data.site_dataset import site_collate
    from stsfl.client.data.site_prepare import prepare_site
    from stsfl.client.lab.baselines import Cohort, network_spec, split_patients
    from stsfl.client.training.trainer import make_loader, train_local
    from stsfl.common.clinical_features import clinical_dim
    from stsfl.common.clinical_stats import combine_clinical_sums
    from stsfl.common.config import SiteConfig, load_config, load_preset, load_schema, without_n4
    from stsfl.tasks.multimodal.model import MultimodalCoxNet

    start = time.perf_counter()
    preset = without_n4(load_preset(args.preset)) if args.no_n4 else load_preset(args.preset)
    schema = load_schema()
    yamls = sorted(args.cohort.glob("*/site.yaml"))
    prepared = [prepare_site(load_config(y, SiteConfig), y, preset, schema=schema) for y in yamls]
    train_sites, held = prepared[:-1], prepared[-1]
    splits = {
        s.name: split_patients(
            [p.pid for p in s.patients],
            [p.record.event[0] if p.record.observed[0] else 0 for p in s.patients],
            args.seed,
            (0.8, 0.2, 0.0),
        )
        for s in train_sites
    }
    splits[held.name] = {"train": [], "val": [], "test": sorted(p.pid for p in held.patients)}
    stats = combine_clinical_sums([s.clinical_sums() for s in train_sites], schema)
    cohort = Cohort(schema, preset, prepared, splits, stats, args.seed)
    t_prepare = time.perf_counter() - start
    modalities, cfg = network_spec("mmnn_blended", preset.train.model_copy(update={"epochs": args.epochs, "seed": args.seed}))
    torch.manual_seed(cfg.seed)
    net = MultimodalCoxNet(preset, clinical_dim(schema), len(schema.endpoints), modalities)
    start_from_clinical_cox(net, cohort)
    collate = site_collate(preset)
    t0 = time.perf_counter()
    result = train_local(
        net,
        make_loader(cohort.dataset("train", train=True), cfg.batch_size, collate, True, cfg.seed),
        make_loader(cohort.dataset("val"), cfg.batch_size, collate, False),
        cfg,
        show_progress=not args.smoke,
    )
    t_train = time.perf_counter() - t0
    net.eval()
    model = export_model(work, net, stats, train_sites, {"training": f"pooled, {args.epochs} epochs", "holdout": held.name})
    seconds = {"prepare": round(t_prepare, 1), "train": round(t_train, 1), "best_epoch": result.best_epoch}
    return cohort, held, train_sites, model, net, stats, seconds


def export_model(work: Path, net, stats, train_sites: list, source: dict):
    """work/model.stsfl.zip of `net`, its baselines from the training centres' monthly bins."""
    from stsfl.client.prediction.model_export import export_local_model

    work.mkdir(parents=True, exist_ok=True)
    first = train_sites[0]
    return export_local_model(
        work / "model.stsfl.zip", net, first.preset, first.schema, stats, {s.name: (s, None) for s in train_sites}, source=source
    )


def load_federated(args, results: Path, work: Path):
    """A finished federation's kept model (results/model_selected.npz: the selected round with its
    network shares) on the run's own preset, clinical statistics and held-out centre; the model file's
    baselines from the training centres' bins. Returns what train_and_export returns."""
    import torch

    from stsfl.client.data.site_prepare import prepare_site
    from stsfl.client.lab.baselines import Cohort
    from stsfl.common.clinical_features import clinical_dim
    from stsfl.common.clinical_stats import GlobalClinicalStats
    from stsfl.common.config import FederationConfig, SiteConfig, load_config, load_preset, load_schema
    from stsfl.tasks.multimodal.model import MultimodalCoxNet

    start = time.perf_counter()
    fed = load_config(results / "federation.yaml", FederationConfig)
    (holdout,) = fed.holdout
    preset, schema = load_preset(fed.preset, fed.model_norm), load_schema()
    yamls = {y.parent.name: y for y in sorted(args.cohort.glob("*/site.yaml"))}
    prepared = {n: prepare_site(load_config(y, SiteConfig), y, preset, schema=schema) for n, y in yamls.items()}
    held, train_sites = prepared[holdout], [prepared[n] for n in fed.training_sites]
    # the comparison Cox model is fitted on every patient of the training centres
    splits = {s.name: {"train": sorted(p.pid for p in s.patients), "val": [], "test": []} for s in train_sites}
    splits[held.name] = {"train": [], "val": [], "test": sorted(p.pid for p in held.patients)}
    stats = GlobalClinicalStats.from_dict(json.loads((results / "statistics.json").read_text())["global"])
    cohort = Cohort(schema, preset, [*train_sites, held], splits, stats, fed.recipe.train.seed)
    net = MultimodalCoxNet(preset, clinical_dim(schema), len(schema.endpoints))
    with np.load(results / "model_selected.npz") as kept:
        net.load_state_dict({k: torch.from_numpy(kept[k]) for k in net.state_dict()})
    net.eval()
    model = export_model(work, net, stats, train_sites, {"training": f"federation {results}", "holdout": held.name})
    summary = json.loads((results / "summary.json").read_text())
    seconds = {"prepare": round(time.perf_counter() - start, 1), "selected_round": summary["selected_round"]}
    return cohort, held, train_sites, model, net, stats, seconds


def _slopes(entry: dict) -> dict[str, float]:
    """The slopes a recalibration on all the held-out patients fits: the event's and the competing event's."""
    return {"event": entry["slope"]} | ({"competing": entry["competing"]["slope"]} if "competing" in entry else {})


def endpoint_report(k, held_risks, train_risks, truth, clinical, model, args) -> tuple[dict, dict]:
    """All figures of endpoint k at the held-out centre (see the module docstring), and the held-out
    patients' {"data", "risks": {method: [n, H]}} at the horizons (pooled over runs by pooled_report)."""
    from stsfl.client.prediction.recalibrate_site import model_risk
    from stsfl.client.prediction.recalibration import RiskModel, cross_fitted_risk, endpoint_data, fit_endpoint
    from stsfl.common.absolute_risk import horizons_in_days
    from stsfl.common.baseline_hazard import time_grid
    from stsfl.common.metrics import brier_times

    endpoint = held_risks.endpoints[k]
    seen = np.asarray(held_risks.observed[:, k], bool)
    data, train = endpoint_data(held_risks, k), endpoint_data(train_risks, k)
    cause = data.cause
    horizons = horizons_in_days(HORIZONS_YEARS)
    pooled = model_risk(model, endpoint)
    without = RiskModel(1.0, pooled.hazard)
    grid = model.baseline["grid"]
    edges = time_grid(float(grid["bin_days"]), float(grid["max_days"]))

    def on(times: np.ndarray) -> dict[str, np.ndarray]:
        risks = {"network": np.stack([pooled.risk(data.eta, data.eta_cause, t) for t in times], axis=1)}
        if cause is not None:
            risks["network_one_minus_s"] = np.stack([without.risk(data.eta, data.eta_cause, t) for t in times], axis=1)
        return risks | {"truth": true_risk(truth[seen], endpoint, cause, times)}

    at_horizons = on(horizons) | {
        "recalibrated_cross_fitted": cross_fitted_risk(data, edges, list(horizons), args.folds, args.seed)
    }
    times = brier_times(train.time, data.time)
    true_eta = truth[seen][f"{endpoint}_log_hazard"].to_numpy(float)
    report = {
        "patients": int(len(data.time)),
        "events": int(np.sum(data.status == 1)),
        "competing_events": int(np.sum(data.status == 2)),
        "risk": "crude cumulative incidence (death competing)" if cause else "1 - S",
        "recalibration_slopes": _slopes(fit_endpoint(data, edges)[1]),
        "calibration": calibration_rows(data, at_horizons, horizons, args.min_events),
        "integrated_brier": brier_rows(data, train, on(times), times),
        "concordance": concordance(
            data,
            train,
            {
                "network": data.eta,
                "cox_clinical": clinical[seen, k],
                "oracle": true_eta,
                "oracle_clinical": truth[seen][f"{endpoint}_clinical"].to_numpy(float),
            },
        ),
    }
    return report, {"data": data, "risks": at_horizons}


def pooled_report(runs: dict[str, dict], held_out: dict[str, dict], min_events: int) -> dict:
    """Per endpoint over the runs (each a different held-out centre or seed): calibration of the
    held-out patients of all runs together (each patient scored by the run that held it out), the
    mean IBS and C over the runs, and in how many runs the network's IBS is below AJ / KM's."""
    from stsfl.common.absolute_risk import horizons_in_days

    horizons = horizons_in_days(HORIZONS_YEARS)
    out = {}
    for endpoint in next(iter(runs.values()))["endpoints"]:
        parts = [held_out[name][endpoint] for name in runs]
        data = SimpleNamespace(
            time=np.concatenate([p["data"].time for p in parts]), status=np.concatenate([p["data"].status for p in parts])
        )
        risks = {m: np.concatenate([p["risks"][m] for p in parts]) for m in parts[0]["risks"]}
        reports = [r["endpoints"][endpoint] for r in runs.values()]
        brier = {m: float(np.mean([r["integrated_brier"][m] for r in reports])) for m in reports[0]["integrated_brier"]}
        concordance_mean = {
            m: {c: float(np.mean([r["concordance"][m][c] for r in reports])) for c in ("harrell", "uno")}
            for m in reports[0]["concordance"]
        }
        below = sum(r["integrated_brier"]["network"] < r["integrated_brier"]["aalen_johansen_or_km"] for r in reports)
        out[endpoint] = {
            "patients": int(len(data.time)),
            "events": int(np.sum(data.status == 1)),
            "competing_events": int(np.sum(data.status == 2)),
            "risk": reports[0]["risk"],
            "calibration": calibration_rows(data, risks, horizons, min_events),
            "integrated_brier_mean": brier,
            "runs_ibs_below_aalen_johansen_or_km": f"{below} of {len(reports)}",
            "concordance_mean": concordance_mean,
        }
    return out


def _concatenate(parts):
    from stsfl.client.prediction.baseline_site import SiteRisks

    stack = {name: np.concatenate([getattr(p, name) for p in parts]) for name in ("time", "event", "observed", "log_risk")}
    return SiteRisks(parts[0].endpoints, **stack, competing=parts[0].competing)


def _brier_cells(b: dict) -> list[str]:
    """IBS of the network, 1 - S (competing endpoints), AJ / KM and the truth."""
    one_minus_s = f"{b['network_one_minus_s']:.4f}" if "network_one_minus_s" in b else "-"
    return [f"{b['network']:.4f}", one_minus_s, f"{b['aalen_johansen_or_km']:.4f}", f"{b['truth']:.4f}"]


def _concordance_cells(c: dict) -> list[str]:
    return [f"{c[m]['harrell']:.3f} / {c[m]['uno']:.3f}" for m in ("network", "cox_clinical", "oracle")]


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    meta = report["meta"]
    table = Table(title=f"held-out {meta['held_out']} of {meta['cohort']}: calibration slope / O/E, IBS, C")
    for col in ("endpoint", "horizon", "network", "1 - S", "recalibrated", "truth"):
        table.add_column(col)
    for endpoint, r in report["endpoints"].items():
        for key, row in r["calibration"].items():
            cells = [
                "skipped"
                if "skipped" in row
                else (f"{row[m]['slope']:.2f} / {row[m]['observed_expected']:.2f}" if m in row else "-")
                for m in ("network", "network_one_minus_s", "recalibrated_cross_fitted", "truth")
            ]
            table.add_row(endpoint, key, *cells)
    Console().print(table)
    ibs = Table(title="integrated Brier score (IPCW) and concordance (Harrell / Uno)")
    for col in ("endpoint", "IBS net", "IBS 1 - S", "IBS AJ/KM", "IBS truth", "C net", "C clinical Cox", "C oracle"):
        ibs.add_column(col)
    for endpoint, r in report["endpoints"].items():
        brier, c = _brier_cells(r["integrated_brier"]), _concordance_cells(r["concordance"])
        ibs.add_row(endpoint, *brier, *c)
    Console().print(ibs)


def print_pooled(pooled: dict, runs: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pooled over {runs} runs' held-out patients: calibration slope / O/E")
    for col in ("endpoint", "horizon", "observed", "network", "1 - S", "recalibrated", "truth"):
        table.add_column(col)
    for endpoint, r in pooled.items():
        for key, row in r["calibration"].items():
            if "skipped" in row:
                table.add_row(endpoint, key, "skipped")
                continue
            cells = [
                f"{row[m]['slope']:.2f} / {row[m]['observed_expected']:.2f}" if m in row else "-"
                for m in ("network", "network_one_minus_s", "recalibrated_cross_fitted", "truth")
            ]
            table.add_row(endpoint, key, f"{row['observed']:.3f} ({row['events']} ev.)", *cells)
    Console().print(table)
    ibs = Table(title=f"mean over the {runs} runs: IBS (IPCW) and C (Harrell / Uno)")
    for col in (
        "endpoint",
        "IBS net",
        "IBS 1 - S",
        "IBS AJ/KM",
        "IBS truth",
        "runs net < AJ/KM",
        "C net",
        "C clinical Cox",
        "C oracle",
    ):
        ibs.add_column(col)
    for endpoint, r in pooled.items():
        brier, c = _brier_cells(r["integrated_brier_mean"]), _concordance_cells(r["concordance_mean"])
        ibs.add_row(endpoint, *brier, r["runs_ibs_below_aalen_johansen_or_km"], *c)
    Console().print(ibs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folds", type=int, default=5, help="cross-fitting folds of the recalibration")
    parser.add_argument("--min-events", type=int, default=10, help="fewer events before a horizon: no calibration there")
    parser.add_argument("--no-n4", action="store_true", help="skip N4 bias correction (time-boxed preprocessing)")
    parser.add_argument("--smoke", action="store_true", help="the test suite's run: 1 epoch, 2 folds, 1 event suffices")
    parser.add_argument(
        "--federation",
        type=Path,
        nargs="+",
        default=[],
        help="finished federations' results folders: their kept models, no training (several: pooled over them)",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/stsfl-bench-competing"), help="model file")
    parser.add_argument("--out", type=Path, default=RESULTS / "competing_risks.json")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.folds, args.min_events = 1, 2, 1

    import torch

    torch.set_num_threads(args.threads)
    if len(args.federation) <= 1:
        report, _ = score_run(args, args.federation[0] if args.federation else None)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print_table(report)
        return
    runs, held_out = {}, {}
    for results in args.federation:
        runs[results.name], held_out[results.name] = score_run(args, results)
        print_table(runs[results.name])
    report = {"pooled": pooled_report(runs, held_out, args.min_events), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_pooled(report["pooled"], len(runs))


def score_run(args, federation: Path | None) -> tuple[dict, dict]:
    """The report of one held-out centre (a pooled training, or a finished federation's kept model) and
    its held-out patients' horizon risks per endpoint."""
    from stsfl.client.lab.baselines import fit_clinical_model
    from stsfl.client.prediction.model_export import site_risks

    start = time.perf_counter()
    if federation:
        cohort, held, train_sites, model, net, stats, seconds = load_federated(args, federation, args.work)
    else:
        cohort, held, train_sites, model, net, stats, seconds = train_and_export(args, args.work)
    train_risks = _concatenate([site_risks(net, s, stats)[1] for s in train_sites])
    held_pids, held_risks = site_risks(net, held, stats, cohort.splits[held.name]["test"])
    clinical = fit_clinical_model(cohort, "cox_clinical", seed=args.seed).risk  # rows: the held-out patients
    truth = _truth(args.cohort, held_pids)
    scored = {
        e: endpoint_report(k, held_risks, train_risks, truth, clinical, model, args) for k, e in enumerate(held_risks.endpoints)
    }
    training = (
        f"federation {federation}: its kept model (model_selected.npz, selected round and network shares)"
        if federation
        else "pooled (not federated): mmnn_blended started from the clinical Cox fit; baselines from per-centre monthly bins (as the federation)"
    )
    report = {"endpoints": {e: r for e, (r, _) in scored.items()}}
    report["meta"] = {
        "cohort": str(args.cohort),
        "held_out": held.name,
        "training_centres": [s.name for s in train_sites],
        "training": training,
        "competing_baseline": "death before the event: federated binned Breslow baseline, OS log-risk as covariate",
        "calibration": "cloglog pseudo-value intercept / slope and O/E against Aalen-Johansen (Kaplan-Meier for os)",
        "brier": "IPCW with the held-out centre's own censoring (Kaplan-Meier), Brier times of stsfl.common.metrics",
        "preset": args.preset if not federation else "the federation's",
        "epochs": args.epochs if not federation else None,
        "folds": args.folds,
        "n4": not args.no_n4,
        "seed": args.seed,
        "smoke": args.smoke,
        "cpus": os.cpu_count(),
        "seconds": seconds | {"total": round(time.perf_counter() - start, 1)},
    }
    return report, {e: arrays for e, (_, arrays) in scored.items()}


if __name__ == "__main__":
    main()
