"""A clinical-only site: one CSV of numeric features and follow-up, a linear Cox model.

CSV contract (FLamby's TCGA-BRCA layout): a patient id in the first column, numeric feature
columns, `E` (event 1 / censored 0) and `T` (time in days), optionally `fold` (`train` / `test`;
default all `train`). Non-test rows are split once, by a hash of patient id and run seed, into
training (80 %) and validation (20 %; `validation-fraction` in the round config). A held-out centre evaluates on all its rows.

Local training is full-batch: the risk set of the Cox partial likelihood is the site's whole
training split (a stratified-by-centre Cox model), one optimiser step per local epoch. The
objective is that mean negative log partial likelihood over the site's events plus an optional
ridge penalty l2/2 ||beta||^2 on the coefficients (not the bias, which the Cox likelihood ignores):
averaged over sites with event weights it is the pooled stratified likelihood / events + l2/2
||beta||^2, a convex problem with a unique optimum for l2 > 0 (lifelines' `penalizer` is the same
penalty on the likelihood / patients: penalizer = l2 x events / patients).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stsfl.client.training.optimizer import make_optimizer
from stsfl.common.config import ScheduleWindow, SiteConfig, TrainConfig, resolve_recipe
from stsfl.common.cox import cox_loss
from stsfl.common.cox_newton import cox_loglik, cox_score
from stsfl.common.messages import RunConfig
from stsfl.common.moments import site_moments
from stsfl.common.site_metrics import DEFAULT_HORIZONS_DAYS, site_metrics
from stsfl.common.validation_split import MAX_FRACTION, MIN_SITE_EVENTS, fold_of, validation_pids
from stsfl.tasks.linear_cox.model import build_linear_cox

EVENT, TIME, FOLD = "E", "T", "fold"
MIN_CV_FOLD_PATIENTS = 10  # a site sits ridge cross-validation out below it
VALIDATION_FRACTION = 0.2


@dataclass
class Split:
    """x [N, D] float32 (raw features), time [N], event [N]."""

    x: torch.Tensor
    time: torch.Tensor
    event: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def events(self) -> int:
        return int(self.event.sum().item())


def linear_cox_recipe() -> TrainConfig:
    """The task's default recipe (full-batch gradient descent), as a federation without overrides runs it."""
    return resolve_recipe("linear-cox", None, None, {}).train


def read_table(path: Path) -> pd.DataFrame:
    """The site CSV, checked: numeric features, E in {0,1}, T >= 0; errors name the file and column."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError) as err:
        raise ValueError(f"{path}: cannot read the site table ({err})") from None
    for column in (EVENT, TIME):
        if column not in frame.columns:
            raise ValueError(f"{path}: missing column {column!r} (expected patient id, features, E, T[, fold])")
    features = feature_columns(frame)
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise ValueError(f"{path}: non-numeric feature column(s) {', '.join(bad[:5])}")
    if not frame[EVENT].isin([0, 1]).all():
        raise ValueError(f"{path}: column E must be 0 or 1")
    if (frame[TIME] < 0).any() or frame[TIME].isna().any():
        raise ValueError(f"{path}: column T must be non-negative days for every patient")
    return frame


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns[1:] if c not in (EVENT, TIME, FOLD)]


def _split(frame: pd.DataFrame, features: list[str]) -> Split:
    return Split(
        x=torch.tensor(frame[features].to_numpy(dtype=np.float64), dtype=torch.float32),
        time=torch.tensor(frame[TIME].to_numpy(dtype=np.float64), dtype=torch.float32),
        event=torch.tensor(frame[EVENT].to_numpy(dtype=np.float64), dtype=torch.float32),
    )


class LinearCoxSite:
    """The site's data and the linear Cox model's local train / evaluate steps."""

    def __init__(
        self,
        csv_path: Path,
        run_seed: int,
        validation_fraction: float = VALIDATION_FRACTION,
        l2_penalty: float = 0.0,
        recipe: TrainConfig | None = None,
        min_validation_events: int = MIN_SITE_EVENTS,
        max_validation_fraction: float = MAX_FRACTION,
    ):
        if l2_penalty < 0:
            raise ValueError(f"{csv_path}: l2-penalty must be >= 0, got {l2_penalty}")
        self.l2_penalty = l2_penalty
        self.recipe = recipe or linear_cox_recipe()
        frame = read_table(csv_path)
        self.features = feature_columns(frame)
        fold = frame[FOLD].astype(str) if FOLD in frame.columns else pd.Series("train", index=frame.index)
        pid = frame.iloc[:, 0].astype(str)
        candidates = fold != "test"
        validating = validation_pids(
            pid[candidates].tolist(),
            frame.loc[candidates, EVENT].tolist(),
            run_seed,
            validation_fraction,
            min_validation_events,
            max_validation_fraction,
        )
        is_val = pid.isin(validating) & candidates
        self.all = _split(frame, self.features)
        # Each row's patient id and split, in the order of `all` (the site's risk_scores.csv).
        self.pids = pid.tolist()
        self.row_splits = np.where(fold == "test", "test", np.where(is_val, "validation", "train")).tolist()
        self.train = _split(frame[(fold != "test") & ~is_val], self.features)
        self.train_pids = pid[(fold != "test") & ~is_val].tolist()
        self.run_seed = run_seed
        self.val = _split(frame[is_val], self.features)
        self.test = _split(frame[fold == "test"], self.features)

    @classmethod
    def from_run(cls, site: SiteConfig, site_yaml: Path, run: RunConfig) -> LinearCoxSite:
        """The site's table (site YAML's clinical.csv) with the run's split, penalty and recipe."""
        return cls(
            site.root_dir(site_yaml) / site.layout.clinical_csv,
            run.run_seed,
            run.validation_fraction,
            run.l2_penalty,
            run.recipe,
            run.min_site_validation_events,
            run.max_validation_fraction,
        )

    def statistics(self) -> dict:
        """Feature moments of the training split, patient and event counts (aggregates only)."""
        return {
            "moments": site_moments(self.train.x.double().numpy()),
            "features": self.features,
            "counts": {"patients": len(self.train), "events": {"os": self.train.events}},
        }

    def ridge_cv_parts(self, statistics: dict, folds: int, betas: list[dict]) -> dict[str, list]:
        """For each {"fold", "beta"}: the Cox score, information, events and log-likelihood of the
        training split without that fold at beta (the federated Newton step of that fold's fit), and
        the log-likelihood of the whole training split at beta (its cross-validated partial
        likelihood). Sums over patients only; a site with a fold of fewer than MIN_CV_FOLD_PATIENTS
        patients sends none and says why ("declined")."""
        fold = np.array([fold_of(p, self.run_seed, folds) for p in self.train_pids], dtype=int)
        sizes = np.bincount(fold, minlength=folds)
        if sizes.min() < MIN_CV_FOLD_PATIENTS:
            # the difference between a fit's all-rows and without-fold sums is an aggregate over the fold
            return {
                "parts": [],
                "declined": f"a fold of {int(sizes.min())} training patients (fewer than {MIN_CV_FOLD_PATIENTS}): "
                "its sums would describe too few patients",
            }
        x = self._standardise(self.train, statistics).double().numpy()
        time, event = self.train.time.double().numpy(), self.train.event.double().numpy()
        parts = []
        for entry in betas:
            beta = np.asarray(entry["beta"], float)
            kept = fold != int(entry["fold"])
            without = cox_score(x[kept], time[kept], event[kept], beta)
            parts.append({"without": without.to_dict(), "all_loglik": cox_loglik(x, time, event, beta)})
        return {"parts": parts}

    @staticmethod
    def build_model(statistics: dict, seed: int) -> torch.nn.Module:
        return build_linear_cox(len(statistics["mean"]), seed)

    @staticmethod
    def _standardise(split: Split, statistics: dict) -> torch.Tensor:
        mean = torch.tensor(statistics["mean"], dtype=torch.float32)
        std = torch.tensor(statistics["std"], dtype=torch.float32)
        return (split.x - mean) / std

    def loss(self, model: torch.nn.Module, split: Split, statistics: dict) -> torch.Tensor:
        """Mean negative log partial likelihood over the split's events (its whole risk set)."""
        risk = model(self._standardise(split, statistics)).squeeze(-1)
        return cox_loss(risk, split.time, split.event)

    def objective(self, model: torch.nn.Module, split: Split, statistics: dict) -> torch.Tensor:
        """What local training minimises: `loss` + l2/2 ||beta||^2 (the bias is not penalised)."""
        loss = self.loss(model, split, statistics)
        if self.l2_penalty > 0:
            loss = loss + self.l2_penalty / 2 * (model.fc.weight**2).sum()
        return loss

    def fit(
        self,
        model: torch.nn.Module,
        statistics: dict,
        window: ScheduleWindow,
        seed: int = 0,
        blend_weights: dict[str, float] | None = None,
    ) -> dict[str, float]:
        """`recipe.epochs_per_round` full-batch steps from the global weights (+ FedProx term) at
        `window` of the run's rate schedule; returns loss aggregates. Full-batch steps use no
        randomness (`seed` unused) and the single head needs no blending."""
        recipe = self.recipe
        global_params = [p.detach().clone() for p in model.parameters()]
        params = list(model.parameters())
        opt = make_optimizer(params, recipe)
        steps = recipe.epochs_per_round
        first, total = window.start_epoch, window.total_epochs
        with torch.no_grad():
            pre_train = float(self.loss(model, self.train, statistics))
            pre_val = float(self.loss(model, self.val, statistics)) if self.val.events else float("nan")
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = recipe.learning_rate_at(first + step, total)
            opt.zero_grad()
            loss = self.objective(model, self.train, statistics)
            if recipe.prox_mu > 0:
                loss = loss + recipe.prox_mu / 2 * sum(((p - g) ** 2).sum() for p, g in zip(params, global_params))
            loss.backward()
            if recipe.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
            opt.step()
        with torch.no_grad():
            post_train = float(self.loss(model, self.train, statistics))
            post_val = float(self.loss(model, self.val, statistics)) if self.val.events else float("nan")
        return {
            "train-loss-fused-pre": pre_train,
            "val-loss-fused-pre": pre_val,
            "train-loss-fused": post_train,
            "val-loss-fused": post_val,
        }

    def outcome_risks(self, model: torch.nn.Module, statistics: dict, validation_only: bool = False):
        """Log-risks with the outcomes of the training and validation rows (not the test fold), or
        of the validation rows only."""
        from stsfl.client.prediction.baseline_site import SiteRisks

        rows = [split for split in ((self.val,) if validation_only else (self.train, self.val)) if len(split)]
        with torch.no_grad():
            risk = torch.cat([model(self._standardise(split, statistics)).reshape(-1) for split in rows]).numpy()
        time = torch.cat([split.time.reshape(-1) for split in rows]).numpy()
        event = torch.cat([split.event.reshape(-1) for split in rows]).numpy()
        return SiteRisks(["os"], time[:, None], event[:, None], np.ones((len(time), 1), bool), risk[:, None])

    def patient_risks(self, model: torch.nn.Module, statistics: dict, holdout: bool):
        """Log-risk of every row with its split (test fold included; all `external` at a held-out centre)."""
        from stsfl.client.outputs.site_outputs import PatientRisks

        with torch.no_grad():
            risk = model(self._standardise(self.all, statistics)).reshape(-1, 1).numpy()
        splits = ["external"] * len(self.pids) if holdout else list(self.row_splits)
        return PatientRisks(list(self.pids), splits, ["clinical"] * len(self.pids), ["os"], risk)

    @staticmethod
    def write_site_documents(model: torch.nn.Module, statistics: dict, folder: Path, federation: str) -> dict[str, int]:
        """Nothing beyond risk_scores.csv: a tabular site has no MRI to explain and no `sts-client
        validate` report (its table is checked when it is read)."""
        return {}

    def evaluate(
        self, model: torch.nn.Module, statistics: dict, holdout: bool, horizons: Sequence[float] = DEFAULT_HORIZONS_DAYS
    ) -> dict[str, float]:
        """Validation loss (training sites) and the aggregate metrics of `stsfl.common.site_metrics`
        (endpoint `os`) on the evaluation split (test rows, or all rows of a held-out centre)."""
        split = self.all if holdout else self.test
        metrics: dict[str, float] = {"eval-patients": float(len(split)), "eval-events-os": float(split.events)}
        with torch.no_grad():
            if not holdout and self.val.events:
                metrics["val-loss-fused"] = float(self.loss(model, self.val, statistics))
            if len(split):
                risk = model(self._standardise(split, statistics)).squeeze(-1).numpy()
                metrics.update(site_metrics({"os": (split.time.numpy(), split.event.numpy(), risk)}, horizons))
        return metrics


def fit_pooled(
    sites: list[LinearCoxSite], statistics: dict, steps: int, lr: float | Sequence[float], seed: int
) -> torch.nn.Module:
    """Centralised reference: `steps` full-batch gradient-descent steps on the Cox likelihood pooled
    over the sites' training splits and stratified by site (sum_k events_k * objective_k / sum_k events_k,
    each site's ridge penalty included). `lr`: one rate for every step, or each step's rate."""
    rates = [float(lr)] * steps if isinstance(lr, (int, float)) else [float(r) for r in lr]
    if len(rates) != steps:
        raise ValueError(f"{len(rates)} learning rates for {steps} steps")
    model = build_linear_cox(len(statistics["mean"]), seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # each step sets its own rate
    events = [s.train.events for s in sites]
    for rate in rates:
        opt.param_groups[0]["lr"] = rate
        opt.zero_grad()
        loss = sum(e * s.objective(model, s.train, statistics) for e, s in zip(events, sites)) / sum(events)
        loss.backward()
        opt.step()
    return model
