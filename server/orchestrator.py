"""The federation's protocol, run inside our ServerApp (one call per `flwr run`): the phases in order.

Each phase is a module of its own that talks to the sites through the messenger only
(stsfl.server.federation.messenger; the run's settings and services: stsfl.server.federation.run_context):
1. wait for the sites of the config (timeout, names the missing ones);
2. statistics (stsfl.server.phases.statistics_phase): every site answers the who-are-you query with its
   clinical sums and counts and its event counts; the server combines them; with `l2_penalty: cv`
   (linear-cox) the ridge penalty is chosen by federated cross-validation
   (stsfl.server.phases.ridge_cv_phase); then (multimodal) the fused head's linear term starts
   from a federated Cox fit of the encoded clinical vector (clinical variables and the schema's MRI
   radiomics), scored with the clinical-only Cox model at the held-out centres
   (stsfl.server.phases.clinical_init_phase);
3. rounds 1..R (stsfl.server.phases.training_round): training sites get the global weights + round config;
   each replies with new weights and aggregates. The round completes when `min_sites` training
   sites replied within `round_timeout_s` (it first waits up to `rejoin_wait_s` for training sites
   that dropped out);
4. every `eval_every` rounds and after the last (stsfl.server.phases.evaluation_phase): all sites evaluate
   the global model; the round with the lowest smoothed validation loss is kept; after the last
   round, per endpoint, the share of the network's own part of the log-risk (over the linear Cox
   model it started from) with the lowest validation loss (stsfl.server.phases.network_share);
5. after each round: checkpoint (atomic), results files and the round line (stsfl.server.phases.run_summary);
6. with `cross_site.enabled`, after the last round: cross-site validation (stsfl.server.phases.cross_site_phase);
7. after the last round: baseline hazard and calibration of the selected model
   (stsfl.server.phases.prediction_phases) -> baseline_hazard.json, calibration.json;
8. with `site_outputs.enabled` (default), last: every site writes its patients' risk scores,
   Grad-CAM overlays and validation report at the site (stsfl.server.phases.site_outputs_phase); only
   counts come back, into summary.json.

Resuming (`resume=True`) reloads the checkpoint and continues after its round; per-round seeds
are `seed + round`, so the continuation is the same computation as an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid

from stsfl.common.config import FederationConfig
from stsfl.common.tasks import ServerModel
from stsfl.server.federation.checkpoint import ServerState, load_checkpoint, save_checkpoint
from stsfl.server.federation.messenger import SiteMessenger
from stsfl.server.federation.run_context import RunContext, fixed_l2_penalty, run_config
from stsfl.server.federation.strategies import Aggregator
from stsfl.server.phases.clinical_init_phase import run_clinical_init, score_clinical_start
from stsfl.server.phases.cross_site_phase import run_cross_site
from stsfl.server.phases.evaluation_phase import check_learning, evaluate, select
from stsfl.server.phases.network_share import run_network_share
from stsfl.server.phases.prediction_phases import run_prediction_phases
from stsfl.server.phases.ridge_cv_phase import run_ridge_cv
from stsfl.server.phases.run_summary import progress_line, write_summary
from stsfl.server.phases.site_outputs_phase import run_site_outputs
from stsfl.server.phases.statistics_phase import run_statistics_phase
from stsfl.server.phases.training_round import train_round
from stsfl.server.reports.results import ResultsFolder


class Federation:
    """One federation run: `run()` executes the phases in order and returns the summary."""

    def __init__(
        self,
        grid: Grid,
        fed: FederationConfig,
        config_path: Path,
        results_dir: Path,
        hooks: ServerModel,
        log: Callable[[str], None] = print,
        resume: bool = False,
    ):
        self.config_path = Path(config_path)
        self.resume = resume
        messenger = SiteMessenger(grid, fed, run_config(fed, hooks), log)
        self.ctx = RunContext(fed, hooks, ResultsFolder(results_dir), messenger, Aggregator(fed), log, fixed_l2_penalty(fed))

    def run(self) -> dict[str, Any]:
        ctx, fed = self.ctx, self.ctx.fed
        ctx.results.copy_config(self.config_path)
        ctx.results.write_status("waiting-for-sites", expected=fed.sites)
        ctx.messenger.wait_for_all()
        state = self._start()
        for server_round in range(state.round + 1, fed.rounds + 1):
            self._round(state, server_round)
        run_network_share(ctx, state)
        cross_site = run_cross_site(ctx, state) if fed.cross_site.enabled else None
        baseline = run_prediction_phases(ctx, state) if fed.prediction.baseline else None
        site_outputs = run_site_outputs(ctx, state, baseline) if fed.site_outputs.enabled else None
        return write_summary(ctx, state, cross_site, site_outputs)

    def _start(self) -> ServerState:
        """The state before the next round: from the checkpoint when resuming, else from the statistics
        phase, the ridge penalty's cross-validation (`l2_penalty: cv`) and (multimodal) the linear Cox
        initialisation, scored at the held-out centres."""
        ctx = self.ctx
        if self.resume:
            state = load_checkpoint(ctx.results.root, log=ctx.log)
            ctx.aggregator.load_state(state.strategy_state)
            ctx.l2_penalty = state.meta.get("l2_penalty", ctx.l2_penalty)
            ctx.log(f"resuming after round {state.round} of {ctx.fed.rounds}")
            return state
        ctx.results.write_status("statistics")
        state = run_statistics_phase(ctx)
        run_ridge_cv(ctx, state)
        run_clinical_init(ctx, state)
        score_clinical_start(ctx, state)
        save_checkpoint(ctx.results.root, state)
        return state

    def _round(self, state: ServerState, server_round: int) -> None:
        """Train, evaluate when due, select, checkpoint (atomic) and write the results files."""
        ctx, fed = self.ctx, self.ctx.fed
        ctx.results.write_status("training", round=server_round, completed_rounds=state.round)
        t0 = time.monotonic()
        record = train_round(ctx, state, server_round)
        if server_round % fed.eval_every == 0 or server_round == fed.rounds:
            record["evaluate_sites"] = evaluate(ctx, state, server_round)
            select(ctx, state, record)
        record["time_round_s"] = time.monotonic() - t0
        state.round = server_round
        previous = state.meta["history"][-1].get("objective") if state.meta["history"] else None
        if previous is not None and record["objective"] is not None:
            record["objective_change"] = record["objective"] - previous
        state.meta["history"].append(record)
        state.strategy_state = ctx.aggregator.state()
        save_checkpoint(ctx.results.root, state)
        ctx.results.write_history(state.meta["history"])
        ctx.log(progress_line(fed, record))
        check_learning(ctx, state)
