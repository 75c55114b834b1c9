"""The coordinator's federation configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    field_validator,
    model_validator,
)

from stsfl.common.config.loader import StrictModel
from stsfl.common.config.prediction import PredictionConfig
from stsfl.common.config.preset import Norm, load_preset
from stsfl.common.config.recipe import EffectiveRecipe, resolve_recipe
from stsfl.common.config.security import FederationSecurity
from stsfl.common.config.train import ScheduleWindow
from stsfl.common.tasks import CLINICAL_INIT, RIDGE_CV, task_spec
from stsfl.common.validation_split import MAX_FRACTION, MIN_SITE_EVENTS

StrategyName = Literal["fedavg", "fedprox", "fedadam", "fedbn"]

# Recipe keys that a federation does not use, and what it uses instead.
POOLED_ONLY_WHY = {
    "epochs": "a federation trains `rounds` x train.epochs_per_round epochs",
    "blend_interval": "a federation updates the blend weights once per round, from every site's losses",
}
POOLED_ONLY = set(POOLED_ONLY_WHY)

# The schedule's shape keys, and which schedule reads which.
SCHEDULE_KEYS = {"warmup_fraction", "final_lr_fraction"}
SCHEDULE_KEYS_USED = {"onecycle": {"warmup_fraction"}, "warmup_cosine": SCHEDULE_KEYS, "constant": set()}

# Keys of earlier versions that now live in the training recipe (`train:`), with their new names.
MOVED_KEYS = {
    "local_epochs": "train.epochs_per_round",
    "learning_rate": "train.lr (and train.schedule)",
    "learning_rate_decay": "train.schedule",
    "learning_rate_final": "train.final_lr_fraction",
    "client_optimizer": "train.optimizer",
    "blending": "train.blend_mode (off = no blending)",
    "seed": "train.seed",
}


class StrategyParams(StrictModel):
    """The server optimiser of FedAdam (Reddi et al. 2021; Flower's names eta, beta_1, beta_2, tau).
    FedProx's proximal weight is the training recipe's `train.prox_mu` (the sites' trainer adds it)."""

    server_lr: PositiveFloat = 0.01
    beta_1: float = Field(0.9, ge=0.0, lt=1.0)
    beta_2: float = Field(0.99, ge=0.0, lt=1.0)
    tau: PositiveFloat = 1e-3


class NetworkConfig(StrictModel):
    """Where the SuperLink listens. port 0 = any free port (printed at start)."""

    host: str = "127.0.0.1"
    port: NonNegativeInt = 0


class CrossSiteConfig(StrictModel):
    """Cross-site validation after the last round (as NVIDIA FLARE's cross-site model evaluation):
    each training site fine-tunes the final global model for `local_epochs` and returns it; the
    global model and every local model are then evaluated at every site (aggregate metrics only)."""

    enabled: bool = False
    local_epochs: PositiveInt = Field(1, description="local fine-tuning epochs from the final global model")


class SecureAggregationConfig(StrictModel):
    """Flower's SecAgg+ over the training sites' updates (stsfl.server.federation.secure_aggregation): the
    coordinator learns only the weighted mean of the updates, never one site's.

    clipping_range: each coordinate of a site's weighted update (new weights - global) is clipped to
    +-clipping_range before it is quantized; quantization_range: integer levels over that range;
    threshold_fraction: share of a round's training sites whose key shares are needed to unmask
    (at least 2), so a round survives sites that drop out after sending their keys."""

    enabled: bool = False
    clipping_range: PositiveFloat = 8.0
    quantization_range: PositiveInt = Field(2**22, le=2**24)
    threshold_fraction: float = Field(0.66, gt=0.0, le=1.0)


class SiteOutputsConfig(StrictModel):
    """The site-outputs query after the prediction phases: every site writes, on its own side, its
    patients' risk scores, Grad-CAM overlays and its validation report (stsfl.client.outputs.site_outputs);
    only counts come back."""

    enabled: bool = True


class ClinicalInitConfig(StrictModel):
    """Task multimodal: before round 1, the fused head's linear clinical term is fitted as a ridge
    Cox model across the training sites by `steps` Newton steps (0 = off; stsfl.server.phases.clinical_init_phase)."""

    steps: NonNegativeInt = 4
    l2_penalty: NonNegativeFloat | Literal["auto"] = Field(
        "auto",
        description="ridge l2/2 ||beta||^2 on the per-event mean log-likelihood; auto: clinical features / "
        "training events of the endpoint (about one prior observation per coefficient)",
    )


class RidgeCvConfig(StrictModel):
    """`l2_penalty: cv` (task linear-cox): before round 1 the ridge penalty is chosen from `grid` by
    federated `folds`-fold cross-validation of the stratified Cox partial likelihood (each fit by
    `newton_steps` Newton steps from aggregates; stsfl.server.phases.ridge_cv_phase)."""

    grid: list[PositiveFloat] = Field([0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0], min_length=2)
    folds: int = Field(5, ge=2, le=20)
    newton_steps: PositiveInt = 8


class SelectionConfig(StrictModel):
    """Which round's global model the run keeps (model_selected.npz, the baseline hazard, the site
    outputs): the lowest exponentially smoothed, events-weighted fused validation loss of the
    training sites. A dozen validation patients give a noisy loss whose minimum is mostly chance, so
    it is smoothed over the evaluated rounds (`smoothing` x previous + (1 - smoothing) x new), and
    below `min_validation_events` (all training sites' validation events, all endpoints) the run keeps
    its last round and says why instead.

    A small site's `validation_fraction` share holds a handful of events: a site whose validation
    patients hold fewer than `min_site_validation_events` events (all endpoints) validates the next
    patients in its hash order until they do, up to `max_validation_fraction` of its patients
    (stsfl.common.validation_split).

    `network_shares`: after the last round, per endpoint, the share of the network's own part of the
    log-risk (what it adds to the linear Cox model it started from; 0: that model alone) with the
    lowest pooled validation loss among these is kept (stsfl.server.phases.network_share), given
    `min_share_events` validation events of that endpoint; [1.0] keeps the network as trained."""

    smoothing: float = Field(0.5, ge=0.0, lt=1.0)
    min_validation_events: NonNegativeInt = 20
    min_site_validation_events: NonNegativeInt = MIN_SITE_EVENTS
    max_validation_fraction: float = Field(MAX_FRACTION, ge=0.0, lt=1.0)
    network_shares: list[float] = Field(
        [0.0, 0.25, 0.5, 0.75, 1.0],
        min_length=1,
        description="shares of the network's part of each endpoint's log-risk tried on the validation split "
        "after the last round (multimodal task; [1.0]: the network as trained)",
    )
    min_share_events: NonNegativeInt = Field(
        10, description="an endpoint with fewer validation events (all training sites) keeps the network as trained"
    )

    @field_validator("network_shares")
    @classmethod
    def _shares_in_unit_interval(cls, shares: list[float]) -> list[float]:
        if any(not 0.0 <= s <= 1.0 for s in shares):
            raise ValueError(f"every share must lie in [0, 1], got {shares}")
        return shares


class SimulationConfig(StrictModel):
    """`sts-server --simulate`: every site of `sites` as a virtual SuperNode of Flower's simulation
    engine on this machine (same ServerApp and ClientApp as a real federation).

    site_configs: site name -> site YAML (a relative path is relative to the federation YAML).
    cpus: CPUs the simulation engine may use (default: all of this machine's); sites run
    `cpus // cpus_per_site` at a time. threads_per_site: torch / BLAS threads of each site."""

    site_configs: dict[str, Path] = {}
    cpus: PositiveInt | None = None
    cpus_per_site: PositiveInt = 1
    threads_per_site: PositiveInt = 1

    @model_validator(mode="after")
    def _enough_cpus(self) -> SimulationConfig:
        if self.cpus is not None and self.cpus_per_site > self.cpus:
            raise ValueError(f"cpus_per_site={self.cpus_per_site} exceeds cpus={self.cpus}: no site could run")
        return self


class FederationConfig(StrictModel):
    """Who takes part, which strategy, how long, where results go."""

    name: str = "sts-federation"
    mode: Literal["single", "loco"] = Field(
        "single", description="one federation with the `holdout` centres, or leave-one-centre-out: one federation per centre"
    )
    preset: str = "cpu-small"
    model_norm: Norm | None = Field(
        None, description="normalisation layers of the network, overriding the preset's (DP-SGD needs group or instance)"
    )
    schema_file: Path | None = Field(None, description="clinical schema; default: the bundled configs/schema.yaml")
    sites: list[str]
    holdout: list[str] = []
    task: str = Field(
        "multimodal",
        description="a registered task (stsfl.common.tasks): multimodal Cox network (the product) or clinical-only "
        "linear Cox (tabular sites)",
    )
    strategy: StrategyName = "fedavg"
    strategy_params: StrategyParams = StrategyParams()
    weighting: Literal["events", "patients"] = Field(
        "events", description="weight of a site's update in the average (see stsfl.server.federation.strategies)"
    )
    rounds: PositiveInt = 20
    train: dict[str, Any] = Field(
        {},
        description="overrides of the training recipe by the names of the preset's `train:` block "
        "(stsfl.common.config.train.TrainConfig); `sts-server check-config` prints the effective recipe",
    )
    l2_penalty: float | Literal["cv"] = Field(
        0.0,
        description="task linear-cox: ridge penalty l2_penalty/2 ||beta||^2 on the Cox coefficients, added to each site's "
        "per-event mean loss; cv: chosen before round 1 by federated cross-validation (ridge_cv)",
    )
    ridge_cv: RidgeCvConfig = RidgeCvConfig()

    @field_validator("l2_penalty", mode="before")
    @classmethod
    def _l2_penalty(cls, value: Any) -> Any:
        if value == "cv":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"expected a number greater than or equal to 0, or cv; got {value!r}")
        return float(value)

    validation_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of a training site's patients kept for validation")
    min_sites: PositiveInt = Field(1, description="quorum: a round completes with at least this many training sites")
    max_update_norm_ratio: float = Field(
        100.0,
        gt=1.0,
        description="a site update (new weights - global) whose norm exceeds this many times the other sites' median "
        "(counted as at least 1 % of the global model's norm) is rejected and logged, not averaged (as is an update with NaN/inf)",
    )
    round_timeout_s: PositiveFloat = Field(600.0, description="how long a round waits for the sites' replies")
    wait_for_sites_s: PositiveFloat = Field(300.0, description="how long to wait for every site to connect")
    transfer_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32",
        description="precision of the weights in a training round's messages, both directions "
        "(16 bits: half the bytes; aggregation stays float32; secure aggregation rounds send float32)",
    )
    round_retries: NonNegativeInt = Field(
        2,
        description="a training round in which no training site replied is sent again this many times, "
        "each time waiting twice as long, before the run fails",
    )
    rejoin_wait_s: float = Field(
        0.0,
        ge=0.0,
        description="at the start of a round, how long to wait for training sites that dropped out (e.g. restarting) "
        "before the round goes ahead with the quorum",
    )
    clinical_init: ClinicalInitConfig = ClinicalInitConfig()
    selection: SelectionConfig = SelectionConfig()
    stall_rounds: NonNegativeInt = Field(
        3, description="warn when the training loss has not fallen for this many rounds (0 = never)"
    )
    eval_every: PositiveInt = Field(1, description="held-out evaluation every N rounds (and always after the last)")
    eval_horizons_days: list[PositiveFloat] = Field(
        [365.0, 730.0, 1825.0], min_length=1, description="horizons (days) of the time-dependent AUC at evaluation"
    )
    cross_site: CrossSiteConfig = CrossSiteConfig()
    secure_aggregation: SecureAggregationConfig = SecureAggregationConfig()
    results_dir: Path = Path("results")
    network: NetworkConfig = NetworkConfig()
    security: FederationSecurity = FederationSecurity()
    simulation: SimulationConfig = SimulationConfig()
    prediction: PredictionConfig = PredictionConfig()
    site_outputs: SiteOutputsConfig = SiteOutputsConfig()
    _effective: EffectiveRecipe = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            moved = {key: MOVED_KEYS[key] for key in data if key in MOVED_KEYS}
            params = data.get("strategy_params")
            if isinstance(params, dict) and "prox_mu" in params:
                moved["strategy_params.prox_mu"] = "train.prox_mu"
            if moved:
                raise ValueError(
                    "the training recipe lives in one `train:` block (the preset's names): "
                    + ", ".join(f"{old} -> {new}" for old, new in moved.items())
                )
        return data

    @model_validator(mode="after")
    def _recipe(self) -> FederationConfig:
        spec = task_spec(self.task)
        preset = load_preset(self.preset, self.model_norm).train if spec.uses_preset else None
        self._effective = resolve_recipe(self.task, self.preset, preset, self.train)
        recipe = self._effective.train
        pooled_only = sorted(POOLED_ONLY & set(self.train))
        if pooled_only:
            raise ValueError(f"train.{pooled_only[0]} applies to pooled training only: " + POOLED_ONLY_WHY[pooled_only[0]])
        if self.strategy == "fedprox" and recipe.prox_mu == 0:
            raise ValueError("strategy fedprox with train.prox_mu 0 is FedAvg: set train.prox_mu (e.g. 0.01)")
        if not spec.can(CLINICAL_INIT) and "clinical_init" in self.model_fields_set:
            raise ValueError(f"clinical_init: task {self.task} has no clinical Cox initialisation")
        idle = sorted(set(self.train) & SCHEDULE_KEYS - SCHEDULE_KEYS_USED[recipe.schedule])
        if idle:
            raise ValueError(f"train.{idle[0]} has no effect with schedule {recipe.schedule!r}")
        unused = sorted(spec.recipe_unused & set(self.train))
        if unused:
            raise ValueError(
                f"train.{unused[0]}: task {self.task} trains by full-batch steps over each site's "
                f"training split and does not use {', '.join(unused)}"
            )
        return self

    @property
    def recipe(self) -> EffectiveRecipe:
        """The training recipe the sites run, with the source of every value."""
        return self._effective

    @property
    def seed(self) -> int:
        """The run's seed (train.seed): validation splits, initial weights, per-round seeds."""
        return self._effective.train.seed

    def learning_rate_at(self, server_round: int) -> float:
        """The rate of round `server_round`'s first step (exact for one step per epoch; for the record)."""
        window = self.schedule_window(server_round)
        return self._effective.train.learning_rate_at(window.start_epoch, window.total_epochs)

    def schedule_window(self, server_round: int) -> ScheduleWindow:
        """Round `server_round`'s stretch of the one learning-rate schedule of the whole run."""
        per_round = self._effective.train.epochs_per_round
        return ScheduleWindow(
            start_epoch=(server_round - 1) * per_round, total_epochs=self.rounds * per_round, span_epochs=per_round
        )

    @model_validator(mode="after")
    def _sites_consistent(self) -> FederationConfig:
        if len(set(self.sites)) != len(self.sites):
            raise ValueError("a site is listed twice in `sites`")
        if self.mode == "loco":
            if self.holdout:
                raise ValueError("mode: loco holds out every centre in turn; leave `holdout` empty")
            if len(self.sites) < 2:
                raise ValueError("mode: loco needs at least 2 sites (one held out, the others training)")
            if self.min_sites > len(self.sites) - 1:
                raise ValueError(f"mode: loco trains {len(self.sites) - 1} site(s) per fold but min_sites={self.min_sites}")
        unknown = [s for s in self.holdout if s not in self.sites]
        if unknown:
            raise ValueError(f"holdout site(s) {', '.join(unknown)} are not listed in `sites`")
        if self.l2_penalty == "cv" and not task_spec(self.task).can(RIDGE_CV):
            raise ValueError(f"l2_penalty: cv: task {self.task} cannot choose its ridge penalty by cross-validation")
        if self.l2_penalty != "cv" and self.l2_penalty > 0 and self.task != "linear-cox":
            raise ValueError(f"l2_penalty applies to task linear-cox only (task is {self.task!r})")
        if not self.training_sites:
            raise ValueError("every site is held out: at least one site must train")
        if self.min_sites > len(self.training_sites):
            raise ValueError(
                f"min_sites={self.min_sites} but only {len(self.training_sites)} site(s) train ({', '.join(self.training_sites)})"
            )
        if self.secure_aggregation.enabled:
            if self.cross_site.enabled:
                raise ValueError(
                    "secure_aggregation.enabled and cross_site.enabled exclude each other: cross-site validation "
                    "sends every site's fine-tuned model to the coordinator in the clear, which secure aggregation "
                    "exists to prevent (turn one of them off)"
                )
            if len(self.training_sites) < 2:
                raise ValueError(
                    "secure_aggregation needs at least 2 training sites: the sum of one site's update is that update"
                )
        strangers = sorted(set(self.simulation.site_configs) - set(self.sites))
        if strangers:
            raise ValueError(f"simulation.site_configs names site(s) {', '.join(strangers)} that are not listed in `sites`")
        strangers = sorted(set(self.security.site_keys) - set(self.sites))
        if strangers:
            raise ValueError(f"security.site_keys names site(s) {', '.join(strangers)} that are not listed in `sites`")
        return self

    @property
    def training_sites(self) -> list[str]:
        return [s for s in self.sites if s not in self.holdout]
