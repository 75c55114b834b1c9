"""Absolute-risk prediction on a synthetic cohort's held-out centre: calibration, IBS, coarsening.

Training is POOLED (not federated, to keep it cheap): the multimodal network of the preset
(gradient blending, Wang) on the training centres' patients (80 % train, 20 % validation for
epoch selection), with the clinical statistics of the training centres only. The baseline hazard
is then computed as the federation does it: every training centre bins its own events and risk
sums on the monthly grid, the server adds the bins (stsfl.client.prediction.model_export). The last centre
is held out entirely. Reported per endpoint on the held-out centre:

- calibration at 1, 3, 5 years: Crowson intercept (log O/E) and slope, KM-observed vs predicted
  risk by decile (PNG), decision curve at 3 years (PNG; net benefit at a few thresholds);
- integrated Brier score of the network with the federated monthly baseline, with the exact
  (pooled Breslow) baseline, of the clinical-only Cox model (lifelines, L2 0.1, all clinical
  variables, its own Breslow baseline) and of the true survival (oracle, from ground_truth.csv);
- coarsening error of the federated baseline: |S0 monthly - S0 exact| over 0-5 years on the
  training data, and |risk monthly - risk exact| at 1/3/5 years for the held-out patients;
- `sts-client predict` for a few held-out patients (seconds per patient).

    stsfl synth --out /tmp/synth-default
    python tests/benchmarks/bench_prediction.py /tmp/synth-default [--epochs 20] [--no-n4] [--threads 1]
writes tests/benchmarks/results/prediction.json and prediction_{calibration,decision}.png.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
HORIZONS_YEARS = (1.0, 3.0, 5.0)
DCA_THRESHOLDS = (0.1, 0.2, 0.3, 0.4)


def _site_yamls(cohort: Path, cache_root: Path | None) -> list[Path]:
    """The cohort's site YAMLs, or copies pointing at `cache_root/<centre>` as preprocessing cache."""
    yamls = sorted(cohort.glob("*/site.yaml"))
    if cache_root is None:
        return yamls
    import yaml

    out = []
    for path in yamls:
        data = yaml.safe_load(path.read_text())
        data.update(root=str(path.parent.resolve()), cache_dir=str(cache_root / data["name"]))
        target = cache_root / f"{data['name']}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(data))
        out.append(target)
    return out


def _truth_survival(truth_csv: Path, pids: list[str], endpoint: str, times_days: np.ndarray) -> np.ndarray:
    """True S(t | patient) [N, T] of the synthetic model: exp(-(t / s)^k exp(log-hazard)), t in years."""
    import pandas as pd

    from stsfl.client.lab.synthetic.hazard import ENDPOINTS

    truth = pd.read_csv(truth_csv, dtype={"patient_id": str}).set_index("patient_id")
    eta = truth.loc[pids, f"{endpoint}_log_hazard"].to_numpy(float)
    model = ENDPOINTS[endpoint]
    h0 = (times_days / 365.25 / model.weibull_scale_years) ** model.weibull_shape
    return np.exp(-np.outer(np.exp(eta), h0))


def main() -> None:  # noqa: PLR0915 - a benchmark reads top to bottom
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohort", type=Path)
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-n4", action="store_true", help="skip N4 bias correction (time-boxed preprocessing)")
    parser.add_argument("--cache-root", type=Path, help="preprocessing caches at CACHE_ROOT/<centre> (site YAML copies there)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/stsfl-bench-prediction"), help="model file and pages")
    parser.add_argument("--out", type=Path, default=RESULTS / "prediction.json")
    args = parser.parse_args()

    import torch
    from lifelines import KaplanMeierFitter
    from rich.console import Console
    from rich.table import Table

    from stsfl.client.data.site_dataset import site_collate
    from stsfl.client.data.site_prepare import prepare_site
    from stsfl.client.lab.baselines import Cohort, fit_clinical_model, network_spec, split_patients
    from stsfl.client.prediction.model_export import export_local_model, site_risks
    from stsfl.client.prediction.predict import predict_patients
    from stsfl.client.training.trainer import make_loader, train_local
    from stsfl.common.absolute_risk import horizons_in_days, predict_absolute
    from stsfl.common.baseline_hazard import BaselineHazard, exact_grid, site_baseline_bins
    from stsfl.common.calibration import (
        calibration_groups,
        calibration_intercept_slope,
        decision_curve,
        plot_calibration,
        plot_decision_curves,
    )
    from stsfl.common.clinical_features import clinical_dim
    from stsfl.common.clinical_stats import combine_clinical_sums
    from stsfl.common.config import SiteConfig, load_config, load_preset, load_schema, without_n4
    from stsfl.common.metrics import breslow_survival, brier_times, harrell_c, integrated_brier_of_survival
    from stsfl.tasks.multimodal.model import MultimodalCoxNet

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    preset = load_preset(args.preset)
    if args.no_n4:
        preset = without_n4(preset)
    schema = load_schema()
    yamls = _site_yamls(args.cohort, args.cache_root)
    prepared = [prepare_site(load_config(y, SiteConfig), y, preset, schema=schema) for y in yamls]
    train_sites, held = prepared[:-1], prepared[-1]
    # Training centres: 80 / 20 train / validation (stratified by the first endpoint's event); held-out: all.
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

    # --- the network, pooled training
    modalities, cfg = network_spec("mmnn_blended", preset.train.model_copy(update={"epochs": args.epochs, "seed": args.seed}))
    torch.manual_seed(cfg.seed)
    net = MultimodalCoxNet(preset, clinical_dim(schema), len(schema.endpoints), modalities)
    collate = site_collate(preset)
    t0 = time.perf_counter()
    result = train_local(
        net,
        make_loader(cohort.dataset("train", train=True), cfg.batch_size, collate, True, cfg.seed),
        make_loader(cohort.dataset("val"), cfg.batch_size, collate, False),
        cfg,
        show_progress=True,
    )
    t_train = time.perf_counter() - t0
    net.eval()

    # --- the model file: baseline from each training centre's monthly bins (train + validation patients)
    args.work.mkdir(parents=True, exist_ok=True)
    model_path = args.work / "model.stsfl.zip"
    model = export_local_model(
        model_path,
        net,
        preset,
        schema,
        stats,
        {s.name: (s, None) for s in train_sites},
        source={"training": f"pooled, {args.epochs} epochs", "holdout": held.name},
    )
    train_parts = [site_risks(net, s, stats)[1] for s in train_sites]
    held_pids, held_risks = site_risks(net, held, stats, splits[held.name]["test"])
    assert held_pids == splits[held.name]["test"]
    clinical_cox = fit_clinical_model(cohort, "cox_clinical", seed=args.seed)  # test rows = held-out centre

    horizons = horizons_in_days(HORIZONS_YEARS)
    report: dict = {"endpoints": {}}
    cal_panels, dca_panels = {}, {}
    for k, endpoint in enumerate(schema.endpoint_names):
        seen = held_risks.observed[:, k]
        t, e, eta = held_risks.time[seen, k], held_risks.event[seen, k], held_risks.log_risk[seen, k]
        pooled = {
            name: np.concatenate([getattr(p, name)[p.observed[:, k], k] for p in train_parts])
            for name in ("time", "event", "log_risk")
        }
        hazard, bins = model.baseline_hazard(endpoint)
        exact = BaselineHazard.from_bins(
            site_baseline_bins(pooled["time"], pooled["event"], pooled["log_risk"], exact_grid(pooled["time"]))
        )
        # coarsening error of the federated (monthly) baseline against the exact-grid (Breslow) one
        grid5 = np.linspace(0, 5 * 365.25, 400)
        s0_diff = np.abs(np.exp(-hazard.at(grid5)) - np.exp(-exact.at(grid5)))
        pred = predict_absolute(eta, hazard, horizons, bins=bins, n_boot=200, seed=args.seed)
        pred_exact = predict_absolute(eta, exact, horizons, n_boot=0)
        risk_diff = np.abs(pred.risk - pred_exact.risk)
        # calibration and decision curves
        calibration, panels = {}, {}
        for i, years in enumerate(HORIZONS_YEARS):
            label = f"{endpoint} {years:g} y"
            try:
                fit = calibration_intercept_slope(eta, hazard.at, t, e, horizons[i])
                calibration[f"{years:g}y"] = {
                    "intercept": fit.intercept,
                    "slope": fit.slope,
                    "observed_events": fit.observed,
                    "expected_events": fit.expected,
                }
            except ValueError as err:
                fit, calibration[f"{years:g}y"] = None, {"error": str(err)}
            panels[label] = (calibration_groups(pred.risk[:, i], t, e, horizons[i]), fit)
        cal_panels.update(panels)
        curve = decision_curve(pred.risk[:, 1], t, e, horizons[1])
        dca_panels[f"{endpoint} 3 y"] = curve
        pick = {
            f"{p:g}": {
                "model": float(curve.model[np.argmin(abs(curve.thresholds - p))]),
                "treat_all": float(curve.treat_all[np.argmin(abs(curve.thresholds - p))]),
            }
            for p in DCA_THRESHOLDS
        }
        # integrated Brier scores on one grid
        train_t, train_e = pooled["time"], pooled["event"]
        times = brier_times(train_t, t)
        cox_train_rows = cohort.clinical_arrays("train")
        cox_seen = cox_train_rows[4][:, k]
        ibs = {
            "network_federated_monthly_baseline": integrated_brier_of_survival(
                train_t, train_e, t, e, hazard.survival(eta, times), times
            ),
            "network_exact_breslow_baseline": integrated_brier_of_survival(
                train_t, train_e, t, e, exact.survival(eta, times), times
            ),
            "cox_clinical": integrated_brier_of_survival(
                train_t,
                train_e,
                t,
                e,
                breslow_survival(
                    cox_train_rows[2][cox_seen, k],
                    cox_train_rows[3][cox_seen, k],
                    clinical_cox.train_risk[cox_seen, k],
                    clinical_cox.risk[seen, k],
                    times,
                ),
                times,
            ),
            "oracle_true_survival": integrated_brier_of_survival(
                train_t,
                train_e,
                t,
                e,
                _truth_survival(args.cohort / "ground_truth.csv", [p for p, s in zip(held_pids, seen) if s], endpoint, times),
                times,
            ),
            "kaplan_meier_no_covariates": integrated_brier_of_survival(
                train_t,
                train_e,
                t,
                e,
                np.tile(KaplanMeierFitter().fit(train_t, train_e > 0.5).predict(times).to_numpy(), (len(t), 1)),
                times,
            ),
        }
        report["endpoints"][endpoint] = {
            "held_out_patients": int(seen.sum()),
            "held_out_events": int(e.sum()),
            "harrell_c": {"network": harrell_c(t, e, eta), "cox_clinical": harrell_c(t, e, clinical_cox.risk[seen, k])},
            "calibration": calibration,
            "integrated_brier": ibs,
            "decision_curve_3y": pick,
            "coarsening": {
                "max_abs_baseline_survival_diff_0_5y": float(s0_diff.max()),
                "mean_abs_risk_diff": {f"{y:g}y": float(risk_diff[:, i].mean()) for i, y in enumerate(HORIZONS_YEARS)},
                "max_abs_risk_diff": {f"{y:g}y": float(risk_diff[:, i].max()) for i, y in enumerate(HORIZONS_YEARS)},
                "training_events": int(bins.events.sum()),
            },
            "mean_predicted_risk": {f"{y:g}y": float(pred.risk[:, i].mean()) for i, y in enumerate(HORIZONS_YEARS)},
            "mean_interval_width": {
                f"{y:g}y": float((pred.risk_high - pred.risk_low)[:, i].mean()) for i, y in enumerate(HORIZONS_YEARS)
            },
        }
    plot_calibration(
        cal_panels,
        args.out.parent / "prediction_calibration.png",
        f"held-out {held.name}: predicted vs Kaplan-Meier observed risk by decile",
    )
    plot_decision_curves(dca_panels, args.out.parent / "prediction_decision.png", f"held-out {held.name}: decision curves")

    # --- sts-client predict for a few held-out patients, as new patients would be
    t0 = time.perf_counter()
    shown = held_pids[:3]
    predict_patients(model_path, yamls[-1], args.work / "pages", pids=shown)
    t_predict = (time.perf_counter() - t0) / len(shown)

    report["meta"] = {
        "cohort": str(args.cohort),
        "held_out": held.name,
        "training_centres": [s.name for s in train_sites],
        "training": "pooled (not federated): mmnn_blended, risk set = batch",
        "preset": preset.name,
        "epochs": args.epochs,
        "best_epoch": result.best_epoch,
        "n4": not args.no_n4,
        "baseline_grid": "monthly (365.25/12 days), per-centre bins added (as the federation does)",
        "intervals": "Poisson bootstrap of the baseline hazard, 200 draws",
        "calibration": "Crowson Poisson intercept (log O/E) and slope, follow-up truncated at the horizon",
        "seed": args.seed,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "seconds": {
            "prepare": round(t_prepare, 1),
            "train": round(t_train, 1),
            "predict_per_patient": round(t_predict, 2),
            "total": round(time.perf_counter() - start, 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    table = Table(title=f"held-out {held.name}: pooled {args.epochs}-epoch {preset.name} network, federated monthly baseline")
    for col in (
        "endpoint",
        "C net / cox",
        "3y intercept",
        "3y slope",
        "IBS net",
        "IBS cox",
        "IBS oracle",
        "coarsening max |dS0|",
    ):
        table.add_column(col)
    for endpoint, r in report["endpoints"].items():
        c3 = r["calibration"]["3y"]
        ibs = r["integrated_brier"]
        table.add_row(
            endpoint,
            f"{r['harrell_c']['network']:.3f} / {r['harrell_c']['cox_clinical']:.3f}",
            f"{c3.get('intercept', float('nan')):+.3f}",
            f"{c3.get('slope', float('nan')):.3f}",
            f"{ibs['network_federated_monthly_baseline']:.4f}",
            f"{ibs['cox_clinical']:.4f}",
            f"{ibs['oracle_true_survival']:.4f}",
            f"{r['coarsening']['max_abs_baseline_survival_diff_0_5y']:.4f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
