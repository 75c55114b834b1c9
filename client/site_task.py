"""What a site does for each message, independent of Flower: statistics, train, evaluate.

`SiteTask` holds the site's configuration and local state folder; the data and model specifics
live in a site implementation chosen by the federation's `task` (sent in every message config):
`linear-cox` -> stsfl.client.linear_cox_site.LinearCoxSite. FedBN is handled here for every
task: with `keep-norm-local`, normalisation-layer tensors are restored from this site's own
copy of the previous round (never from the server) and saved again after training, one file per
round, so a resumed federation sees the same local state as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord

from stsfl.common.config import ScheduleWindow, SiteConfig, TrainConfig, load_config
from stsfl.common.fed_protocol import (
    BASELINE,
    BASELINE_BINS,
    BASELINE_GRID,
    CLINICAL_BETA,
    COMPETING_BASELINE,
    HORIZONS,
    NUM_EVENTS,
    NUM_PATIENTS,
    from_json,
)
from stsfl.common.params import load_arrays, normalisation_keys, state_dict_to_arrays
from stsfl.common.site_metrics import DEFAULT_HORIZONS_DAYS

from .privacy import DpSgd, PrivacyLedger


@lru_cache(maxsize=16)
def _linear_cox_site(csv_path: Path, run_seed: int, validation_fraction: float, l2_penalty: float, recipe_json: str):
    """The site's table, read once per process (a ClientApp process handles one message; the
    in-process benchmarks call many rounds)."""
    from .linear_cox_site import LinearCoxSite

    return LinearCoxSite(
        csv_path, run_seed, validation_fraction, l2_penalty, recipe=TrainConfig.model_validate(from_json(recipe_json))
    )


# Prepared multimodal sites kept between messages by the site worker (stsfl.client.site_worker)
# while a run lasts, by their settings; None: each message prepares its site (a process per message).
_kept_sites: dict[tuple, Any] | None = None


def keep_site_data() -> None:
    """Keep each prepared site in this process until `clear_site_data` (the site worker's mode)."""
    global _kept_sites
    if _kept_sites is None:
        _kept_sites = {}


def clear_site_data() -> None:
    """Forget the kept sites and the linear-cox tables read so far (the run they served ended)."""
    if _kept_sites is not None:
        _kept_sites.clear()
    _linear_cox_site.cache_clear()


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
        from .site_prepare import site_state_dir  # lazily: it imports the MRI and slide pipelines

        path = site_state_dir(self.site, self.site_yaml) / "federations" / federation
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _impl(self, cfg: ConfigRecord):
        task = str(cfg.get("task", "multimodal"))
        seed, fraction = int(cfg.get("run-seed", 0)), float(cfg.get("validation-fraction", 0.2))
        # The federation's training recipe (every message carries it): what every site trains with.
        recipe = str(cfg["recipe"])
        if task == "linear-cox":
            l2 = float(cfg.get("l2-penalty", 0.0))
            return _linear_cox_site(
                self.site.root_dir(self.site_yaml) / self.site.layout.clinical_csv, seed, fraction, l2, recipe
            )
        if task == "multimodal":
            from stsfl.common.config import ClinicalSchema

            from .multimodal_site import MultimodalSite

            # The federation's schema (sent by the server) is the one every site encodes with.
            key = (
                str(self.site_yaml),
                str(cfg["preset"]),
                str(cfg["schema"]),
                seed,
                fraction,
                str(cfg.get("model-norm", "")),
                recipe,
            )
            if _kept_sites is not None and key in _kept_sites:
                return _kept_sites[key]
            schema = ClinicalSchema.model_validate(from_json(str(cfg["schema"])))
            impl = MultimodalSite(
                self.site,
                self.site_yaml,
                str(cfg["preset"]),
                schema,
                seed,
                fraction,
                norm=str(cfg.get("model-norm", "")) or None,
                recipe=TrainConfig.model_validate(from_json(recipe)),
            )
            if _kept_sites is not None:
                _kept_sites[key] = impl
            return impl
        raise ValueError(f"task {task!r} is not available at this site")

    def _model(self, impl, arrays: ArrayRecord, cfg: ConfigRecord) -> tuple[torch.nn.Module, dict]:
        statistics = from_json(str(cfg["statistics"]))
        model = impl.build_model(statistics, int(cfg.get("run-seed", 0)))
        load_arrays(model, arrays)
        return model, statistics

    def _norm_path(self, cfg: ConfigRecord, server_round: int) -> Path:
        return self._state_dir(str(cfg["federation"])) / f"norm_round{server_round}.pt"

    # ------------------------------------------------------------------ protocol
    def statistics(self, cfg: ConfigRecord) -> dict[str, Any]:
        from .statistics_reply import statistics_reply

        return statistics_reply(self.site, self.site_yaml, cfg, lambda: self._impl(cfg).statistics())

    def train(
        self, arrays: ArrayRecord, cfg: ConfigRecord
    ) -> tuple[ArrayRecord, dict[str, float], dict[str, Any], dict[str, float]]:
        """Local training from the global weights: (new weights, metrics, pooled per-head loss
        statistics for federated blending - empty for a single-head model -, privacy: epsilon spent
        and noise multiplier, empty without DP)."""
        t0 = time.perf_counter()
        impl = self._impl(cfg)
        model, statistics = self._model(impl, arrays, cfg)
        server_round = int(cfg["server-round"])
        keep_local = bool(cfg.get("keep-norm-local", False))
        norm_keys = normalisation_keys(model)
        if keep_local and norm_keys:
            previous = self._norm_path(cfg, server_round - 1)
            if previous.is_file():
                model.load_state_dict({**model.state_dict(), **torch.load(previous)})
        window = ScheduleWindow.model_validate(from_json(str(cfg["schedule-window"])))
        privacy, spend = self._privacy(impl, cfg, impl.recipe.epochs_per_round, server_round)
        t1 = time.perf_counter()
        torch.manual_seed(int(cfg["seed"]))
        metrics = impl.fit(
            model,
            statistics,
            window,
            seed=int(cfg["seed"]),
            blend_weights=from_json(str(cfg.get("blend-weights", "null"))),
            **({"privacy": privacy} if privacy else {}),
        )
        spent = spend()
        t2 = time.perf_counter()
        state = model.state_dict()
        if keep_local and norm_keys:
            torch.save({k: v for k, v in state.items() if k in norm_keys}, self._norm_path(cfg, server_round))
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
        return reply, metrics, getattr(impl, "last_stats", {}), spent

    def _privacy(
        self, impl, cfg: ConfigRecord, epochs: int, server_round: int
    ) -> tuple[DpSgd | None, Callable[[], dict[str, float]]]:
        """This training's DP-SGD settings (None without DP) and `spend`, to call once it has run:
        it records the training in the site's ledger and returns what the reply reports.
        Raises PrivacyBudgetSpent when the training would take epsilon past the budget."""
        settings = self.site.privacy
        if not settings.dp:
            return None, dict
        if not hasattr(impl, "dp_sample_rate"):
            raise ValueError(
                f"site {self.name}: privacy.dp trains the multimodal network; task {cfg.get('task')!r} has no DP-SGD"
            )
        ledger = PrivacyLedger(self._state_dir(str(cfg["federation"])) / "privacy_ledger.json", settings.delta)
        rate = impl.dp_sample_rate()
        steps_per_epoch = DpSgd.steps_per_epoch(rate)
        noise = settings.noise_multiplier or ledger.calibrated_noise(
            settings.epsilon_budget, rate, int(cfg.get("planned-epochs", epochs)) * steps_per_epoch
        )
        ledger.check(settings.epsilon_budget, noise, rate, epochs * steps_per_epoch)

        def spend() -> dict[str, float]:
            ledger.record(server_round, noise, rate, epochs * steps_per_epoch)
            return {"dp-epsilon": ledger.epsilon(), "dp-noise-multiplier": noise}

        return DpSgd(noise, settings.max_grad_norm, seed=int(cfg["seed"])), spend

    def clinical_cox(self, cfg: ConfigRecord) -> dict[str, Any]:
        """Score and information of the clinical Cox model at the coefficients in the config
        (stsfl.server.clinical_init_phase), per endpoint: aggregates of the training split."""
        impl = self._impl(cfg)
        if not hasattr(impl, "clinical_cox"):
            raise ValueError(f"site {self.name}: task {cfg.get('task')!r} has no clinical Cox initialisation")
        return impl.clinical_cox(from_json(str(cfg["statistics"])), from_json(str(cfg[CLINICAL_BETA])))

    def evaluate(self, arrays: ArrayRecord, cfg: ConfigRecord) -> dict[str, float]:
        return self._evaluate(self._impl(cfg), arrays, cfg, own_norm=True)

    def cross_evaluate(self, models: dict[str, ArrayRecord], cfg: ConfigRecord) -> dict[str, dict[str, float]]:
        """Cross-site validation: each model on this site's evaluation split. The global model
        takes this site's own FedBN normalisation layers (as at every evaluation); a site's
        locally fine-tuned model is evaluated as it is, with the layers it was trained with."""
        impl = self._impl(cfg)
        global_name = str(cfg.get("global-model", "global"))
        return {name: self._evaluate(impl, arrays, cfg, own_norm=(name == global_name)) for name, arrays in models.items()}

    def _evaluate(self, impl, arrays: ArrayRecord, cfg: ConfigRecord, own_norm: bool) -> dict[str, float]:
        model, statistics = self._eval_model(impl, arrays, cfg, own_norm)
        holdout = self.name in from_json(str(cfg.get("holdout-sites", "[]")))
        horizons = from_json(str(cfg.get("horizons", "null"))) or DEFAULT_HORIZONS_DAYS
        metrics = impl.evaluate(model, statistics, holdout=holdout, horizons=horizons)
        counts = impl.statistics()["counts"]
        metrics[NUM_EVENTS] = float(sum(counts["events"].values()))
        return metrics

    def _eval_model(self, impl, arrays: ArrayRecord, cfg: ConfigRecord, own_norm: bool = True) -> tuple[torch.nn.Module, dict]:
        model, statistics = self._model(impl, arrays, cfg)
        norm_file = self._norm_path(cfg, int(cfg["server-round"]))
        if own_norm and bool(cfg.get("keep-norm-local", False)) and norm_file.is_file():
            # FedBN: a training site evaluates with its own normalisation layers of this round.
            model.load_state_dict({**model.state_dict(), **torch.load(norm_file)})
        model.eval()
        return model, statistics

    def baseline(self, arrays: ArrayRecord, cfg: ConfigRecord) -> dict[str, Any]:
        """Binned events and risk sums per endpoint on the federation's grid (see baseline_site)."""
        from .baseline_site import baseline_reply

        impl = self._impl(cfg)
        model, statistics = self._eval_model(impl, arrays, cfg)
        return baseline_reply(impl.outcome_risks(model, statistics), from_json(str(cfg[BASELINE_GRID])))

    def calibration(self, arrays: ArrayRecord, cfg: ConfigRecord) -> dict[str, Any]:
        """Calibration and decision curves of the absolute risks on this site's evaluation patients
        (held-out centre: all; training site: validation split), see calibration_site."""
        from stsfl.common.baseline_hazard import BaselineHazard

        from .calibration_site import calibration_reply, competing_from_config, skipped_reply

        holdout = self.name in from_json(str(cfg.get("holdout-sites", "[]")))
        hazards = {name: BaselineHazard.from_dict(h) for name, h in from_json(str(cfg[BASELINE])).items()}
        competing = competing_from_config(hazards, from_json(str(cfg.get(COMPETING_BASELINE, "{}"))))
        if not holdout and float(cfg.get("validation-fraction", 0.2)) == 0.0:
            return skipped_reply(list(hazards), from_json(str(cfg[HORIZONS])), "no validation split (validation_fraction: 0)")
        impl = self._impl(cfg)
        model, statistics = self._eval_model(impl, arrays, cfg)
        risks = impl.outcome_risks(model, statistics, validation_only=not holdout)
        return calibration_reply(risks, hazards, from_json(str(cfg[HORIZONS])), competing)

    def site_outputs(self, arrays: ArrayRecord, cfg: ConfigRecord) -> dict[str, int]:
        """Write this site's own outputs of the run at the site (stsfl.client.site_outputs) under
        <outputs_dir>/<federation>/: its patients' risk scores (absolute risks when the config holds
        the pooled baseline hazard), and, for the multimodal task, Grad-CAM overlays and the
        validation report. Returns counts only: {"patients", "gradcams", "problems"}."""
        from .site_outputs import RISK_SCORES, write_risk_scores
        from .site_prepare import site_outputs_dir

        impl = self._impl(cfg)
        model, statistics = self._eval_model(impl, arrays, cfg)
        federation = str(cfg["federation"])
        folder = site_outputs_dir(self.site, self.site_yaml) / federation
        folder.mkdir(parents=True, exist_ok=True)
        holdout = self.name in from_json(str(cfg.get("holdout-sites", "[]")))
        risks = impl.patient_risks(model, statistics, holdout)
        hazards, bins = from_json(str(cfg.get(BASELINE, "{}"))), from_json(str(cfg.get(BASELINE_BINS, "{}")))
        patients = write_risk_scores(
            folder / RISK_SCORES,
            risks,
            hazards,
            bins,
            from_json(str(cfg.get(HORIZONS, "[]"))),
            seed=int(cfg.get("run-seed", 0)),
            competing=from_json(str(cfg.get(COMPETING_BASELINE, "{}"))),
        )
        return {"patients": patients, **impl.write_site_documents(model, statistics, folder, federation)}
