"""`stsfl baselines`: every comparison model of the MMNN paper on the same split, with test C-indices.

Models: Cox PH on the 4 Sarculator variables, Cox PH on all clinical variables (lifelines,
L2-penalised), random survival forest on all clinical variables (scikit-survival), the unimodal
MRI network, the multimodal network without gradient blending and with it (Wang et al. with the
relative floor on |O| of stsfl.common.blending; without it, "raw"; and the MMNN_STS softmax
normalisation), and the blended network with a 64-patient or the whole training split as its Cox
risk set. Modes: `pooled` (all centres
as one data set) and `local` (one centre alone). Each centre is split 70/15/15 (train / val /
test), stratified by the first endpoint's event, seeded. With a synthetic cohort's
ground_truth.csv, the oracle C-index (Harrell's C of the true log-hazard) is reported alongside.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset

from stsfl.client.data.clinical_encoding import apply_global_stats
from stsfl.client.data.site_dataset import SiteDataset, site_collate
from stsfl.client.data.site_prepare import PreparedSite, prepare_site
from stsfl.client.training.trainer import evaluate, make_loader, train_local
from stsfl.common.clinical_features import clinical_dim, clinical_feature_names
from stsfl.common.clinical_stats import GlobalClinicalStats, combine_clinical_sums
from stsfl.common.config import ClinicalSchema, ModelPreset, SiteConfig, TrainConfig, load_config
from stsfl.common.console import UserError
from stsfl.common.metrics import EndpointSplit, Interval, endpoint_report, harrell_c, harrell_c_difference
from stsfl.tasks.multimodal.model import FUSED, MultimodalCoxNet

SPLITS = ("train", "val", "test")
CLINICAL_MODELS = ("cox_sarculator", "cox_clinical", "rsf_clinical")
NETWORK_MODELS = (
    "mri_net",
    "mmnn_unblended",
    "mmnn_blended",
    "mmnn_blended_raw",
    "mmnn_blended_softmax",
    "mmnn_blended_risk64",
    "mmnn_blended_site_risk",
)
ALL_MODELS = CLINICAL_MODELS + NETWORK_MODELS


def discover_sites(paths: Sequence[str | Path]) -> list[Path]:
    """Site YAML files: each path is a site YAML, a site folder (with site.yaml) or a cohort folder
    whose sub-folders hold site.yaml files."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif (path / "site.yaml").is_file():
            found.append(path / "site.yaml")
        elif path.is_dir() and sorted(path.glob("*/site.yaml")):
            found += sorted(path.glob("*/site.yaml"))
        else:
            raise UserError(f"{path}: neither a site YAML nor a folder with site.yaml files")
    return found


def split_patients(pids: Sequence[str], events: Sequence[float], seed: int, fractions=(0.7, 0.15, 0.15)) -> dict[str, list[str]]:
    """Seeded 70/15/15 split stratified by event: each stratum is shuffled and cut in proportion."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    events = np.asarray(events) > 0.5
    for stratum in (True, False):
        members = [p for p, e in zip(pids, events) if e == stratum]
        rng.shuffle(members)
        # Test and validation shares first, so that small strata still put someone in each.
        n_test = round(fractions[2] * len(members))
        n_val = round(fractions[1] * len(members))
        out["test"] += members[:n_test]
        out["val"] += members[n_test : n_test + n_val]
        out["train"] += members[n_test + n_val :]
    return {s: sorted(v) for s, v in out.items()}


class PooledDataset(ConcatDataset):
    """Several sites' datasets as one; set_epoch reaches each (their augmentation depends on it)."""

    def set_epoch(self, epoch: int) -> None:
        for ds in self.datasets:
            ds.set_epoch(epoch)


@dataclass
class Cohort:
    """Prepared sites, their split and the pooled clinical statistics (as a federation would compute)."""

    schema: ClinicalSchema
    preset: ModelPreset
    sites: list[PreparedSite]
    splits: dict[str, dict[str, list[str]]]
    stats: GlobalClinicalStats
    seed: int = 0

    def dataset(self, split: str, train: bool = False) -> PooledDataset:
        return PooledDataset(
            [SiteDataset(s, self.stats, train=train, pids=self.splits[s.name][split], seed=self.seed) for s in self.sites]
        )

    def clinical_arrays(self, split: str) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(site, pid) keys, encoded clinical X [N, C], time, event, observed [N, K]."""
        keys, records = [], []
        for site in self.sites:
            by_pid = {p.pid: p.record for p in site.patients}
            for pid in self.splits[site.name][split]:
                keys.append((site.name, pid))
                records.append(by_pid[pid])
        x = apply_global_stats(records, self.stats, self.schema)
        shape = (len(records), len(self.schema.endpoints))
        time = np.array([r.time for r in records], float).reshape(shape)
        event = np.array([r.event for r in records], float).reshape(shape)
        observed = np.array([r.observed for r in records], bool).reshape(shape)
        return keys, x, np.where(observed, time, 0.0), np.where(observed, event, 0.0), observed


def load_cohort(site_yamls: Sequence[Path], preset: ModelPreset, schema: ClinicalSchema, seed: int, progress: bool) -> Cohort:
    sites = []
    for path in site_yamls:
        site = load_config(path, SiteConfig)
        prepared = prepare_site(site, path, preset, schema=schema, progress=progress)
        if not prepared.patients:
            raise UserError(f"site {site.name} ({path}): no usable patients")
        sites.append(prepared)
    if len({s.name for s in sites}) != len(sites):
        raise UserError("two sites share a name: " + ", ".join(s.name for s in sites))
    splits = {
        s.name: split_patients(
            [p.pid for p in s.patients], [p.record.event[0] if p.record.observed[0] else 0 for p in s.patients], seed
        )
        for s in sites
    }
    stats = combine_clinical_sums([s.clinical_sums() for s in sites], schema)
    return Cohort(schema, preset, sites, splits, stats, seed)


@dataclass
class TestRisks:
    """A model's log-risks [N, K] on the test split (in the cohort's test order)."""

    model: str
    risk: np.ndarray
    train_risk: np.ndarray
    seconds: float = 0.0
    notes: dict = field(default_factory=dict)


def _feature_columns(schema: ClinicalSchema, sarculator_only: bool) -> list[int]:
    names = clinical_feature_names(schema)
    # the clinical baselines use the clinical variables only, not the radiomics the sites compute from the MRI
    keep = {v.name for v in schema.table_variables if v.sarculator or not sarculator_only}
    return [i for i, n in enumerate(names) if n.split("=")[0].removesuffix("__missing") in keep]


def fit_clinical_model(cohort: Cohort, model: str, penalizer: float = 0.1, seed: int = 0) -> TestRisks:
    """Per endpoint: lifelines CoxPHFitter (L2 `penalizer`) or scikit-survival RSF on the encoded clinical vector."""
    from lifelines import CoxPHFitter
    from sksurv.ensemble import RandomSurvivalForest
    from sksurv.util import Surv

    _, x_train, t_train, e_train, o_train = cohort.clinical_arrays("train")
    _, x_test, *_ = cohort.clinical_arrays("test")
    cols = _feature_columns(cohort.schema, sarculator_only=model == "cox_sarculator")
    k_count = t_train.shape[1]
    risk, train_risk = np.zeros((len(x_test), k_count)), np.zeros((len(x_train), k_count))
    for k in range(k_count):
        rows = o_train[:, k]
        xs = x_train[rows][:, cols]
        varying = xs.std(0) > 0  # constant columns (e.g. a never-missing indicator) carry nothing
        xs, xt, xa = xs[:, varying], x_test[:, cols][:, varying], x_train[:, cols][:, varying]
        if model == "rsf_clinical":
            forest = RandomSurvivalForest(n_estimators=200, min_samples_leaf=5, random_state=seed, n_jobs=1)
            forest.fit(xs, Surv.from_arrays(e_train[rows, k] > 0.5, t_train[rows, k]))
            risk[:, k], train_risk[:, k] = forest.predict(xt), forest.predict(xa)
        else:
            frame = pd.DataFrame(xs, columns=[f"x{i}" for i in range(xs.shape[1])])
            cph = CoxPHFitter(penalizer=penalizer).fit(frame.assign(T=t_train[rows, k], E=e_train[rows, k]), "T", "E")
            beta = cph.params_.to_numpy()
            risk[:, k], train_risk[:, k] = xt @ beta, xa @ beta
    return TestRisks(model, risk, train_risk)


def network_spec(model: str, train_cfg: TrainConfig) -> tuple[tuple[str, ...], TrainConfig]:
    """Modalities and training settings of a network baseline."""
    if model == "mri_net":
        return ("mri",), train_cfg.model_copy(update={"blend_mode": "off"})
    if model == "mmnn_unblended":
        return ("mri", "wsi", "clinical"), train_cfg.model_copy(update={"blend_mode": "off"})
    if model == "mmnn_blended":
        return ("mri", "wsi", "clinical"), train_cfg.model_copy(update={"blend_mode": "wang"})
    if model == "mmnn_blended_raw":  # Wang's G/O^2 without the relative floor on |O| (ablation)
        return ("mri", "wsi", "clinical"), train_cfg.model_copy(update={"blend_mode": "wang", "blend_overfit_floor": 0.0})
    if model == "mmnn_blended_softmax":
        return ("mri", "wsi", "clinical"), train_cfg.model_copy(update={"blend_mode": "softmax"})
    if model == "mmnn_blended_risk64":  # MMNN_STS's super-batch of 64, here also the Cox risk set
        return ("mri", "wsi", "clinical"), train_cfg.model_copy(update={"blend_mode": "wang", "risk_set": 64})
    if model == "mmnn_blended_site_risk":
        return ("mri", "wsi", "clinical"), train_cfg.model_copy(update={"blend_mode": "wang", "risk_set": "site"})
    raise ValueError(f"unknown network model {model!r}")


def fit_network(
    cohort: Cohort, model: str, train_cfg: TrainConfig, progress: bool, checkpoint_dir: Path | None = None
) -> TestRisks:
    """Train one network baseline on the train split (selection on val) and score the test split."""
    modalities, cfg = network_spec(model, train_cfg)
    collate = site_collate(cohort.preset)
    torch.manual_seed(cfg.seed)
    net = MultimodalCoxNet(cohort.preset, clinical_dim(cohort.schema), len(cohort.schema.endpoints), modalities)
    train_loader = make_loader(cohort.dataset("train", train=True), cfg.batch_size, collate, shuffle=True, seed=cfg.seed)
    train_eval_loader = make_loader(cohort.dataset("train"), cfg.batch_size, collate, shuffle=False)
    val_loader = make_loader(cohort.dataset("val"), cfg.batch_size, collate, shuffle=False)
    result = train_local(
        net,
        train_loader,
        val_loader,
        cfg,
        train_eval_loader=train_eval_loader,
        checkpoint_dir=checkpoint_dir,
        show_progress=progress,
    )
    test = evaluate(net, make_loader(cohort.dataset("test"), cfg.batch_size, collate, shuffle=False), cfg.ties)
    train_eval = evaluate(net, train_eval_loader, cfg.ties)
    notes = {"best_epoch": result.best_epoch, "blend_history": result.blend.history}
    if result.blend.stats_history:
        notes["blend_g_o"] = result.blend.stats_history
    return TestRisks(model, test.risks[FUSED], train_eval.risks[FUSED], notes=notes)


def oracle_log_hazard(truth_csv: Path, keys: list[tuple[str, str]], endpoints: list[str]) -> np.ndarray | None:
    """[N, K] true log-hazards of the test patients from a synthetic cohort's ground_truth.csv
    (columns patient_id and `<endpoint>_log_hazard`), or None when it does not cover them."""
    truth = pd.read_csv(truth_csv, dtype={"patient_id": str})
    if truth["patient_id"].duplicated().any():
        raise UserError(f"{truth_csv}: patient_id is not unique across centres")
    truth = truth.set_index("patient_id")
    pids = [pid for _, pid in keys]
    columns = [f"{e}_log_hazard" for e in endpoints]
    if not set(pids) <= set(truth.index) or not set(columns) <= set(truth.columns):
        return None
    return truth.loc[pids, columns].to_numpy(float)


@dataclass
class BaselineReport:
    """C-indices per model and endpoint on the test split, oracle, and blended-vs-others differences."""

    endpoints: list[str]
    n_test: int
    rows: dict[str, dict[str, dict]]
    oracle: dict[str, float] | None
    differences: dict[str, dict[str, Interval]]
    notes: dict[str, dict]

    def to_json(self) -> dict:
        def plain(v):
            if isinstance(v, Interval):
                return {"estimate": v.estimate, "low": v.low, "high": v.high}
            if isinstance(v, dict):
                return {str(k): plain(x) for k, x in v.items()}
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v

        return plain(
            {
                "endpoints": self.endpoints,
                "n_test": self.n_test,
                "models": self.rows,
                "oracle_c": self.oracle,
                "blended_minus": self.differences,
                "notes": self.notes,
            }
        )


def score(
    cohort: Cohort, fitted: list[TestRisks], truth_csv: Path | None, horizons: Sequence[float], n_boot: int
) -> BaselineReport:
    keys, _, t_test, e_test, o_test = cohort.clinical_arrays("test")
    _, _, t_train, e_train, o_train = cohort.clinical_arrays("train")
    endpoints = cohort.schema.endpoint_names
    rows: dict[str, dict[str, dict]] = {}
    for f in fitted:
        rows[f.model] = {}
        for k, name in enumerate(endpoints):
            train = EndpointSplit.from_arrays(t_train[:, k], e_train[:, k], f.train_risk[:, k], o_train[:, k])
            test = EndpointSplit.from_arrays(t_test[:, k], e_test[:, k], f.risk[:, k], o_test[:, k])
            rows[f.model][name] = endpoint_report(train, test, horizons, n_boot, seed=cohort.seed)
    oracle = None
    truth = oracle_log_hazard(truth_csv, keys, endpoints) if truth_csv is not None and truth_csv.is_file() else None
    if truth is not None:
        oracle = {}
        for k, name in enumerate(endpoints):
            m = o_test[:, k]
            oracle[name] = harrell_c(t_test[m, k], e_test[m, k], truth[m, k]) if e_test[m, k].sum() > 0 else float("nan")
    by_model = {f.model: f for f in fitted}
    differences: dict[str, dict[str, Interval]] = {}
    if "mmnn_blended" in by_model:
        for other in ("cox_clinical", "mmnn_unblended"):
            if other not in by_model:
                continue
            differences[other] = {}
            for k, name in enumerate(endpoints):
                m = o_test[:, k]
                if e_test[m, k].sum() == 0:
                    continue
                differences[other][name] = harrell_c_difference(
                    t_test[m, k],
                    e_test[m, k],
                    by_model["mmnn_blended"].risk[m, k],
                    by_model[other].risk[m, k],
                    n_boot,
                    cohort.seed,
                )
    notes = {f.model: {"seconds": round(f.seconds, 1), **f.notes} for f in fitted}
    return BaselineReport(endpoints, len(keys), rows, oracle, differences, notes)


def run_baselines(
    site_paths: Sequence[str | Path],
    preset: ModelPreset,
    schema: ClinicalSchema,
    *,
    mode: str = "pooled",
    site: str | None = None,
    models: Sequence[str] = ALL_MODELS,
    train_cfg: TrainConfig | None = None,
    truth_csv: Path | None = None,
    horizons: Sequence[float] = (365.0, 730.0, 1825.0),
    n_boot: int = 200,
    seed: int = 0,
    progress: bool = True,
    checkpoint_root: Path | None = None,
) -> BaselineReport:
    """Prepare the sites, split, fit every requested model, score on the test split.

    checkpoint_root: each network trains with checkpoints in <root>/<model> (after every epoch), so a
    run stopped midway resumes where it was, and a finished model is only re-scored."""
    import time

    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        raise UserError(f"unknown baseline model(s) {unknown}; choose from {', '.join(ALL_MODELS)}")
    cohort = load_cohort(discover_sites(site_paths), preset, schema, seed, progress)
    if mode == "local":
        chosen = [s for s in cohort.sites if s.name == site] if site else cohort.sites[:1]
        if not chosen:
            raise UserError(f"no site named {site!r}; sites: {', '.join(s.name for s in cohort.sites)}")
        # Local-only: one centre's data and its own clinical statistics.
        cohort = Cohort(
            schema,
            preset,
            chosen,
            {chosen[0].name: cohort.splits[chosen[0].name]},
            combine_clinical_sums([chosen[0].clinical_sums()], schema),
            seed,
        )
    elif mode != "pooled":
        raise UserError(f"mode must be 'pooled' or 'local', got {mode!r}")
    train_cfg = (train_cfg or preset.train).model_copy(update={"seed": seed})
    fitted = []
    for name in models:
        start = time.perf_counter()
        if name in CLINICAL_MODELS:
            f = fit_clinical_model(cohort, name, seed=seed)
        else:
            f = fit_network(cohort, name, train_cfg, progress, checkpoint_root / name if checkpoint_root else None)
        f.seconds = time.perf_counter() - start
        fitted.append(f)
    return score(cohort, fitted, truth_csv, horizons, n_boot)


def report_table(report: BaselineReport, title: str):
    """A rich table: Harrell's C [95% CI] per endpoint for every model, the oracle, the differences."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("model")
    for e in report.endpoints:
        table.add_column(f"C {e} [95% CI]")
        table.add_column(f"Uno C {e}")
    for model, per_endpoint in report.rows.items():
        cells = []
        for e in report.endpoints:
            r = per_endpoint[e]
            cells += [str(r["harrell_c"]) if "harrell_c" in r else "-", f"{r['uno_c']:.3f}" if "uno_c" in r else "-"]
        table.add_row(model, *cells)
    if report.oracle:
        table.add_row("oracle (true log-hazard)", *[c for e in report.endpoints for c in (f"{report.oracle[e]:.3f}", "")])
    for other, per_endpoint in report.differences.items():
        table.add_row(f"blended - {other}", *[c for e in report.endpoints for c in (str(per_endpoint.get(e, "-")), "")])
    return table


def write_report(report: BaselineReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return path
