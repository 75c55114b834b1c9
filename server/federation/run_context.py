"""What every phase of a federation run works with: the federation's settings, its task's server
side, the results folder, the messenger and the message configs built from the run's state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stsfl.common.config import FederationConfig
from stsfl.common.messages import RoundConfig, RunConfig
from stsfl.common.tasks import ServerModel
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.messenger import SiteMessenger
from stsfl.server.federation.strategies import Aggregator
from stsfl.server.reports.results import ResultsFolder


@dataclass
class RunContext:
    """One federation run's settings and services (the phases' only way to the sites)."""

    fed: FederationConfig
    hooks: ServerModel  # the task's server side
    results: ResultsFolder
    messenger: SiteMessenger
    aggregator: Aggregator
    log: Callable[[str], None]
    # the ridge penalty the sites train with: the YAML's, or the one `l2_penalty: cv` chose (ridge_cv_phase)
    l2_penalty: float = 0.0

    def run_config(self) -> RunConfig:
        return run_config(self.fed, self.hooks, self.l2_penalty)

    def round_config(self, state: ServerState, server_round: int) -> RoundConfig:
        """The config of the global model of `server_round` (train, evaluate and the queries after)."""
        return round_config(
            self.fed,
            self.run_config(),
            state.meta["statistics"],
            server_round,
            blend_weights=state.meta.get("blend_weights"),
            keep_norm_local=self.aggregator.keeps_norm_local,
        )

    def warn(self, state: ServerState, text: str) -> None:
        """A warning on the coordinator's screen, in server.log and in summary.json (and the report)."""
        state.meta.setdefault("warnings", []).append(text)
        self.log(f"WARNING: {text}")


def round_config(
    fed: FederationConfig,
    run: RunConfig,
    statistics: dict,
    server_round: int,
    blend_weights: dict | None = None,
    keep_norm_local: bool = False,
) -> RoundConfig:
    """The round config of `fed`'s run: the round's seed (run seed + round) and schedule window, the
    evaluation horizons and the held-out centres."""
    return RoundConfig(
        run=run,
        server_round=server_round,
        seed=fed.seed + server_round,
        schedule_window=fed.schedule_window(server_round),
        statistics=statistics,
        blend_weights=blend_weights,
        keep_norm_local=keep_norm_local,
        eval_horizons_days=list(fed.eval_horizons_days),
        holdout_sites=list(fed.holdout),
    )


def run_config(fed: FederationConfig, hooks: ServerModel, l2_penalty: float | None = None) -> RunConfig:
    """What every message of the run carries (the statistics query is this alone)."""
    return RunConfig(
        federation=fed.name,
        task=fed.task,
        preset=fed.preset,
        model_norm=fed.model_norm,
        # what a DP site calibrates its noise to: every local epoch the federation plans to ask for
        planned_epochs=fed.rounds * fed.recipe.train.epochs_per_round
        + (fed.cross_site.local_epochs if fed.cross_site.enabled else 0),
        run_seed=fed.seed,
        recipe=fed.recipe.train,
        validation_fraction=fed.validation_fraction,
        min_site_validation_events=fed.selection.min_site_validation_events,
        max_validation_fraction=fed.selection.max_validation_fraction,
        l2_penalty=fixed_l2_penalty(fed) if l2_penalty is None else l2_penalty,
        schema=hooks.schema_json(),
    )


def fixed_l2_penalty(fed: FederationConfig) -> float:
    """The YAML's ridge penalty; 0 until cross-validation chose one (`l2_penalty: cv`)."""
    return 0.0 if fed.l2_penalty == "cv" else float(fed.l2_penalty)
