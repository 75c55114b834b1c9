"""What a site does for each message, independent of Flower: statistics, train, evaluate, queries.

`SiteTask` holds the site's configuration and local state folder; the data and model specifics
live in the site side of the federation's task (the registry of stsfl.common.tasks; every message
config carries the task's name and the run's settings, stsfl.common.messages.RunConfig). FedBN is
handled here for every task: with `keep_norm_local`, normalisation-layer tensors are restored from
this site's own copy of the previous round (never from the server) and saved again after training,
one file per round, so a resumed federation sees the same local state as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord

from stsfl.client.training.privacy import DpSgd, PrivacyLedger
from stsfl.common.config import SiteConfig, load_config
from stsfl.common.fed_protocol import NUM_EVENTS, NUM_PATIENTS
from stsfl.common.messages import (
    BaselineQuery,
    CalibrationQuery,
    ClinicalCoxQuery,
    CrossEvaluateConfig,
    RidgeCvQuery,
    RoundConfig,
    RunConfig,
    SiteOutputsQuery,
)
from stsfl.common.params import load_arrays, normalisation_keys, state_dict_to_arrays
from stsfl.common.site_metrics import DEFAULT_HORIZONS_DAYS
from stsfl.common.tasks import BLENDING, CLINICAL_INIT, DP_SGD, RIDGE_CV, SiteModel, task_spec

# Prepared sites kept between messages by the site worker (stsfl.client.federation.site_worker) while a run
# lasts, by their settings; None: each message prepares its site (a process per message).
_kept_sites: dict[tuple, Any] | None = None


def keep_site_data() -> None:
    """Keep each prepared site in this process until `clear_site_data` (the site worker's mode)."""
    global _kept_sites
    if _kept_sites is None:
        _kept_sites = {}


def clear_site_data() -> None:
    """Forget the kept sites (the run they served ended)."""
    if _kept_sites is not None:
        _kept_sites.clear()


class SiteTask:
    """One site's side of the protocol."""

    def __init__(self, name: str, site: SiteConfig, site_yaml: Path):
        self.name = name
        self.site = site
        self.site_yaml = site_yaml

    @classmethod
    def from_node_config(cls, name: str, site_yaml: str) -> SiteTask:
        path = Path(site_yaml)
        site = load_config(path, SiteConfig)
        if site.name != name:
            raise ValueError(f"{path}: site name {site.name!r} differs from the SuperNode's site-name {name!r}")
        return cls(name, site, path)

    # ------------------------------------------------------------------ helpers
    def _state_dir(self, federation: str) -> Path:
        from stsfl.client.data.site_prepare import site_state_dir  # lazily: it imports the MRI and slide pipelines

        path = site_state_dir(self.site, self.site_yaml) / "federations" / federation
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _impl(self, run: RunConfig) -> SiteModel:
        """The task's site side for the run's settings (kept by the site worker between messages)."""
        key = (str(self.site_yaml), tuple(sorted((k, str(v)) for k, v in run.entries().items() if k != "planned-epochs")))
        if _kept_sites is not None and key in _kept_sites:
            return _kept_sites[key]
        impl = task_spec(run.task).load_site().from_run(self.site, self.site_yaml, run)
        if _kept_sites is not None:
            _kept_sites[key] = impl
        return impl

    def _model(self, impl: SiteModel, arrays: ArrayRecord, cfg: RoundConfig) -> tuple[torch.nn.Module, dict]:
        model = impl.build_model(cfg.statistics, cfg.run.run_seed)
        load_arrays(model, arrays)
        return model, cfg.statistics

    def _norm_path(self, cfg: RoundConfig, server_round: int) -> Path:
        return self._state_dir(cfg.run.federation) / f"norm_round{server_round}.pt"

    # ------------------------------------------------------------------ protocol
    def statistics(self, run: RunConfig) -> dict[str, Any]:
        from stsfl.client.federation.statistics_reply import statistics_reply

        return statistics_reply(self.site, self.site_yaml, run, lambda: self._impl(run).statistics())

    def train(
        self, arrays: ArrayRecord, cfg: RoundConfig
    ) -> tuple[ArrayRecord, dict[str, float], dict[str, Any], dict[str, float]]:
        """Local training from the global weights: (new weights, metrics, pooled per-head loss
        statistics for federated blending - empty for a single-head model -, privacy: epsilon spent
        and noise multiplier, empty without DP)."""
        t0 = time.perf_counter()
        impl = self._impl(cfg.run)
        model, statistics = self._model(impl, arrays, cfg)
        norm_keys = normalisation_keys(model)
        if cfg.keep_norm_local and norm_keys:
            previous = self._norm_path(cfg, cfg.server_round - 1)
            if previous.is_file():
                model.load_state_dict({**model.state_dict(), **torch.load(previous)})
        privacy, spend = self._privacy(impl, cfg)
        t1 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        metrics = impl.fit(
            model,
            statistics,
            cfg.schedule_window,
            seed=cfg.seed,
            blend_weights=cfg.blend_weights,
            **({"privacy": privacy} if privacy else {}),
        )
        spent = spend()
        t2 = time.perf_counter()
        state = model.state_dict()
        if cfg.keep_norm_local and norm_keys:
            torch.save({k: v for k, v in state.items() if k in norm_keys}, self._norm_path(cfg, cfg.server_round))
        reply = state_dict_to_arrays(state)
        counts = impl.statistics()["counts"]
        metrics.update(
            {
                NUM_PATIENTS: float(counts["patients"]),
                NUM_EVENTS: float(sum(counts["events"].values())),
                "time-load-s": t1 - t0,
                "time-train-s": t2 - t1,
                "time-serialise-s": time.perf_counter() - t2,
            }
        )
        blend_stats = impl.last_stats if task_spec(cfg.run.task).can(BLENDING) else {}
        return reply, metrics, blend_stats, spent

    def _privacy(self, impl: SiteModel, cfg: RoundConfig) -> tuple[DpSgd | None, Callable[[], dict[str, float]]]:
        """This training's DP-SGD settings (None without DP) and `spend`, to call once it has run:
        it records the training in the site's ledger and returns what the reply reports.
        Raises PrivacyBudgetSpent when the training would take epsilon past the budget."""
        settings = self.site.privacy
        if not settings.dp:
            return None, dict
        if not task_spec(cfg.run.task).can(DP_SGD):
            raise ValueError(f"site {self.name}: privacy.dp needs per-sample gradients; task {cfg.run.task!r} has no DP-SGD")
        epochs = impl.recipe.epochs_per_round
        ledger = PrivacyLedger(self._state_dir(cfg.run.federation) / "privacy_ledger.json", settings.delta)
        rate = impl.dp_sample_rate()
        steps_per_epoch = DpSgd.steps_per_epoch(rate)
        noise = settings.noise_multiplier or ledger.calibrated_noise(
            settings.epsilon_budget, rate, (cfg.run.planned_epochs or epochs) * steps_per_epoch
        )
        ledger.check(settings.epsilon_budget, noise, rate, epochs * steps_per_epoch)

        def spend() -> dict[str, float]:
            ledger.record(cfg.server_round, noise, rate, epochs * steps_per_epoch)
            return {"dp-epsilon": ledger.epsilon(), "dp-noise-multiplier": noise}

        return DpSgd(noise, settings.max_grad_norm, seed=cfg.seed), spend

    def clinical_cox(self, query: ClinicalCoxQuery) -> dict[str, Any]:
        """Score and information of the clinical Cox model at the coefficients of the query
        (stsfl.server.phases.clinical_init_phase), per endpoint: aggregates of the training split."""
        if not task_spec(query.run.task).can(CLINICAL_INIT):
            raise ValueError(f"site {self.name}: task {query.run.task!r} has no clinical Cox initialisation")
        return self._impl(query.run).clinical_cox(query.statistics, query.beta)

    def ridge_cv(self, query: RidgeCvQuery) -> dict[str, Any]:
        """The Cox parts of each fold's fit (stsfl.server.phases.ridge_cv_phase): aggregates of the training split."""
        if not task_spec(query.run.task).can(RIDGE_CV):
            raise ValueError(f"site {self.name}: task {query.run.task!r} cannot cross-validate a ridge penalty")
        return self._impl(query.run).ridge_cv_parts(query.statistics, query.folds, query.betas)

    def evaluate(self, arrays: ArrayRecord, cfg: RoundConfig) -> dict[str, float]:
        return self._evaluate(self._impl(cfg.run), arrays, cfg, own_norm=True)

    def cross_evaluate(self, models: dict[str, ArrayRecord], cfg: CrossEvaluateConfig) -> dict[str, dict[str, float]]:
        """Cross-site validation: each model on this site's evaluation split. The global model
        takes this site's own FedBN normalisation layers (as at every evaluation); a site's
        locally fine-tuned model is evaluated as it is, with the layers it was trained with."""
        impl = self._impl(cfg.round.run)
        return {
            name: self._evaluate(impl, arrays, cfg.round, own_norm=(name == cfg.global_model)) for name, arrays in models.items()
        }

    def _evaluate(self, impl: SiteModel, arrays: ArrayRecord, cfg: RoundConfig, own_norm: bool) -> dict[str, float]:
        model, statistics = self._eval_model(impl, arrays, cfg, own_norm)
        holdout = self.name in cfg.holdout_sites
        metrics = impl.evaluate(model, statistics, holdout=holdout, horizons=cfg.eval_horizons_days or DEFAULT_HORIZONS_DAYS)
        counts = impl.statistics()["counts"]
        metrics[NUM_EVENTS] = float(sum(counts["events"].values()))
        return metrics

    def _eval_model(
        self, impl: SiteModel, arrays: ArrayRecord, cfg: RoundConfig, own_norm: bool = True
    ) -> tuple[torch.nn.Module, dict]:
        model, statistics = self._model(impl, arrays, cfg)
        norm_file = self._norm_path(cfg, cfg.server_round)
        if own_norm and cfg.keep_norm_local and norm_file.is_file():
            # FedBN: a training site evaluates with its own normalisation layers of this round.
            model.load_state_dict({**model.state_dict(), **torch.load(norm_file)})
        model.eval()
        return model, statistics

    def baseline(self, arrays: ArrayRecord, query: BaselineQuery) -> dict[str, Any]:
        """Binned events and risk sums per endpoint on the federation's grid (see baseline_site)."""
        from stsfl.client.prediction.baseline_site import baseline_reply

        impl = self._impl(query.round.run)
        model, statistics = self._eval_model(impl, arrays, query.round)
        return baseline_reply(impl.outcome_risks(model, statistics), query.grid)

    def calibration(self, arrays: ArrayRecord, query: CalibrationQuery) -> dict[str, Any]:
        """Calibration and decision curves of the absolute risks on this site's evaluation patients
        (held-out centre: all; training site: validation split), see calibration_site."""
        from stsfl.client.prediction.calibration_site import calibration_reply, competing_from_config, skipped_reply
        from stsfl.common.baseline_hazard import BaselineHazard

        holdout = self.name in query.round.holdout_sites
        hazards = {name: BaselineHazard.from_dict(h) for name, h in query.baseline.items()}
        competing = competing_from_config(hazards, query.competing)
        if not holdout and query.round.run.validation_fraction == 0.0:
            return skipped_reply(list(hazards), query.horizons_days, "no validation split (validation_fraction: 0)")
        impl = self._impl(query.round.run)
        model, statistics = self._eval_model(impl, arrays, query.round)
        risks = impl.outcome_risks(model, statistics, validation_only=not holdout)
        return calibration_reply(risks, hazards, query.horizons_days, competing)

    def site_outputs(self, arrays: ArrayRecord, query: SiteOutputsQuery) -> dict[str, int]:
        """Write this site's own outputs of the run at the site (stsfl.client.outputs.site_outputs) under
        <outputs_dir>/<federation>/: its patients' risk scores (absolute risks when the query holds
        the pooled baseline hazard), and, for the multimodal task, Grad-CAM overlays and the
        validation report. Returns counts only: {"patients", "gradcams", "problems"}."""
        from stsfl.client.data.site_prepare import site_outputs_dir
        from stsfl.client.outputs.site_outputs import RISK_SCORES, write_risk_scores

        run = query.round.run
        impl = self._impl(run)
        model, statistics = self._eval_model(impl, arrays, query.round)
        folder = site_outputs_dir(self.site, self.site_yaml) / run.federation
        folder.mkdir(parents=True, exist_ok=True)
        risks = impl.patient_risks(model, statistics, self.name in query.round.holdout_sites)
        patients = write_risk_scores(
            folder / RISK_SCORES,
            risks,
            query.baseline,
            query.bins,
            query.horizons_days,
            seed=run.run_seed,
            competing=query.competing,
        )
        return {"patients": patients, **impl.write_site_documents(model, statistics, folder, run.federation)}
