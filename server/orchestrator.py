"""The federation's round loop, run inside our ServerApp (one call per `flwr run`).

Phases, in the order they happen:
1. wait for the sites of the config (timeout, names the missing ones);
2. statistics: every site (training and held out) answers one query with its clinical sums and
   counts and its event counts; the server combines them (global standardisation, category sets);
   then (multimodal) the fused head's clinical term starts from a federated clinical Cox fit
   (stsfl.server.clinical_init_phase);
3. rounds 1..R: training sites get the global weights + round config (seed, local epochs,
   learning rate, prox-mu, blend weights, statistics); each replies with new weights and
   aggregates (patients, events, per-head train / validation losses, timings). The round
   completes when `min_sites` training sites replied within `round_timeout_s` (it first waits up
   to `rejoin_wait_s` for training sites that dropped out);
4. every `eval_every` rounds and after the last: all sites evaluate the global model (training
   sites on their validation split: the fused-head loss used for model selection; held-out
   centres on all their patients: C-index, td-AUC, IBS, events);
5. after each round: checkpoint (atomic) and results files;
6. with `cross_site.enabled`, after the last round: cross-site validation (stsfl.server.cross_site).
7. after the last round: baseline hazard and calibration of the selected model
   (stsfl.server.prediction_phases) -> baseline_hazard.json, calibration.json;
8. with `site_outputs.enabled` (default), last: every site writes its patients' risk scores,
   Grad-CAM overlays and validation report at the site (stsfl.server.site_outputs_phase); only
   counts come back, into summary.json.

Resuming (`resume=True`) reloads the checkpoint and continues after its round; per-round seeds
are `seed + round`, so the continuation is the same computation as an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from stsfl.common.config import FederationConfig, ScheduleWindow
from stsfl.common.fed_protocol import (
    ARRAYS,
    BLEND_STATS,
    CLIPPING_RANGE,
    CONFIG,
    METRICS,
    METRICS_PREFIX,
    MODEL_PREFIX,
    MSG_CROSS_EVALUATE,
    MSG_EVALUATE,
    MSG_TRAIN,
    NUM_EVENTS,
    PRIVACY,
    WEIGHT,
    from_json,
    reply_site_name,
    to_json,
)
from stsfl.common.params import arrays_nbytes, arrays_to_numpy, float32_nbytes, from_transfer, numpy_to_arrays, to_transfer
from stsfl.common.site_metrics import describe_metrics

from .checkpoint import ServerState, load_checkpoint, save_checkpoint
from .clinical_init_phase import run_clinical_init, score_clinical_start
from .cross_site import GLOBAL_MODEL, CrossSiteMatrix, local_model_name, write_cross_site
from .model_hooks import LinearCoxHooks
from .results import ResultsFolder
from .sites import TTL_MARGIN_S, MissingSitesError, SiteDirectory
from .strategies import Aggregator, screen_updates

# Fused-head validation loss reported by training sites at evaluation: the model-selection score.
SELECTION_METRIC = "val-loss-fused"


class QuorumError(RuntimeError):
    """Fewer than `min_sites` training sites replied in a round."""


ROUND_BAR_WIDTH = 10  # the round line's progress bar, in ASCII: it also goes to server.log


def _weighted_mean(per_site: dict[str, dict[str, float]], key: str, weight_key: str = NUM_EVENTS) -> float | None:
    pairs = [(m[key], max(float(m.get(weight_key, 0.0)), 0.0)) for m in per_site.values() if key in m]
    total = sum(w for _, w in pairs)
    if not pairs:
        return None
    if total <= 0:
        return float(np.mean([v for v, _ in pairs]))
    return float(sum(v * w for v, w in pairs) / total)


class Federation:
    """One federation run: `run()` executes phases 1-5 and returns the summary."""

    def __init__(
        self,
        grid: Grid,
        fed: FederationConfig,
        config_path: Path,
        results_dir: Path,
        hooks: LinearCoxHooks,
        log: Callable[[str], None] = print,
        resume: bool = False,
    ):
        self.grid = grid
        self.fed = fed
        self.config_path = Path(config_path)
        self.results = ResultsFolder(results_dir)
        self.hooks = hooks
        self.log = log
        self.resume = resume
        self.aggregator = Aggregator(fed)
        # The first query makes each site prepare its data (preprocessing cache): allow a full round.
        self.query_timeout = fed.round_timeout_s
        self.sites = SiteDirectory(grid, fed.sites, self._base_config(), log)

    # ----------------------------------------------------------------- configs sent to sites
    def _base_config(self) -> ConfigRecord:
        return ConfigRecord(
            {
                "federation": self.fed.name,
                "task": self.fed.task,
                "preset": self.fed.preset,
                "model-norm": self.fed.model_norm or "",
                # what a DP site calibrates its noise to: every local epoch the federation plans to ask for
                "planned-epochs": self.fed.rounds * self.fed.recipe.train.epochs_per_round
                + (self.fed.cross_site.local_epochs if self.fed.cross_site.enabled else 0),
                "run-seed": self.fed.seed,
                "recipe": to_json(self.fed.recipe.train.model_dump(mode="json")),
                "validation-fraction": self.fed.validation_fraction,
                "l2-penalty": self.fed.l2_penalty,
                "schema": to_json(self.hooks.schema_json()),
            }
        )

    def _round_config(self, state: ServerState, server_round: int) -> ConfigRecord:
        cfg = self._base_config()
        cfg.update(
            {
                "server-round": server_round,
                "seed": self.fed.seed + server_round,
                "schedule-window": to_json(self.fed.schedule_window(server_round).model_dump()),
                "keep-norm-local": self.aggregator.keeps_norm_local,
                "blend-weights": to_json(state.meta.get("blend_weights")),
                "statistics": to_json(state.meta["statistics"]),
                "horizons": to_json(self.fed.eval_horizons_days),
            }
        )
        return cfg

    # ----------------------------------------------------------------- phases
    def _statistics_phase(self) -> ServerState:
        """Combine every site's sums and counts; build the initial global model from them."""
        per_site = {site: self.sites.statistics[site] for site in self.fed.sites}
        statistics = self.hooks.combine_statistics(per_site)
        self.results.write_json("statistics.json", {"global": statistics, "per_site_counts": self.hooks.site_counts(per_site)})
        arrays = self.hooks.initial_arrays(statistics, self.fed.seed)
        self.log(f"statistics phase: {len(per_site)} sites; model with {sum(a.size for a in arrays.values()):,} values")
        return ServerState(
            round=0,
            global_arrays=arrays,
            meta={
                "statistics": statistics,
                "blend_weights": self.hooks.initial_blend_weights(),
                "blend_state": None,
                "history": [],
                "best_round": None,
                "best_score": None,
            },
        )

    def _send(
        self,
        kind: str,
        sites: list[str],
        records: dict[str, Any] | Callable[[str], dict[str, Any]],
        cfg: ConfigRecord,
        server_round: int,
        timeout: float | None = None,
    ) -> tuple[dict, dict]:
        """Send one message per site (`records`, e.g. {ARRAYS: weights}, or site -> its records; plus
        the config) and wait `timeout` (default round_timeout_s); return (site -> reply, site -> failure reason)."""
        timeout = timeout or self.fed.round_timeout_s
        messages = []
        for site in sites:
            content = RecordDict({**(records(site) if callable(records) else records), CONFIG: cfg})
            messages.append(
                Message(
                    content,
                    dst_node_id=self.sites.node_of[site],
                    message_type=kind,
                    ttl=timeout + TTL_MARGIN_S,
                    group_id=str(server_round),
                )
            )
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        # the SuperLink itself signs an error reply (e.g. node unavailable), and SecAgg+ stage replies carry
        # no site record, so match replies by the message they answer
        site_of_message = {m.metadata.message_id: site for m, site in zip(messages, sites)}
        ok, failed = {}, {}
        for reply in replies:
            site = site_of_message.get(reply.metadata.reply_to_message_id)
            if reply.has_error():
                failed[site or str(reply.metadata.src_node_id)] = reply.error.reason
            else:
                ok[site or reply_site_name(reply.content)] = reply
        for site in sites:
            if site not in ok and site not in failed:
                failed[site] = f"no reply within {timeout:.0f} s"
        # A failed site is asked who it is again before it gets the next round's work: a killed site
        # may still be listed by the SuperLink (until its heartbeat expires) and come back under the same
        # node id (its key), so only its answer tells that it is back; a round waits for it (rejoin_wait_s).
        for site, reason in failed.items():
            self.log(f"round {server_round}: site {site} did not {kind.split('.')[0]}: {reason}")
            self.sites.forget(site)
        return ok, failed

    def _train_round(self, state: ServerState, server_round: int) -> dict[str, Any]:
        training = self.fed.training_sites
        self.sites.refresh(self.query_timeout)
        if self.sites.missing(training) and self.fed.rejoin_wait_s > 0:
            try:
                self.sites.wait_for(training, self.fed.rejoin_wait_s, self.query_timeout)
            except MissingSitesError:
                self.log(f"round {server_round}: goes ahead without {', '.join(self.sites.missing(training))}")
        if len(training) - len(self.sites.missing(training)) < self.fed.min_sites:
            self.sites.wait_for(training, self.fed.wait_for_sites_s, self.query_timeout, at_least=self.fed.min_sites)
        present = [s for s in training if s in self.sites.node_of]
        global_record = numpy_to_arrays(state.global_arrays)
        cfg = self._round_config(state, server_round)
        t0 = time.monotonic()
        if self.fed.secure_aggregation.enabled:
            ok, failed, contents, bytes_up = self._secure_train(state, present, global_record, cfg, server_round)
            bytes_down = arrays_nbytes(global_record)
        else:
            cfg["transfer-dtype"] = self.fed.transfer_dtype
            sent_record = to_transfer(global_record, self.fed.transfer_dtype)
            ok, failed = self._send(MSG_TRAIN, present, {ARRAYS: sent_record}, cfg, server_round)
            for retry in range(1, self.fed.round_retries + 1):
                if ok:
                    break
                # Nobody replied (e.g. every message expired on an overloaded machine): send the round again
                # to the sites that answer now, waiting longer, rather than end the run.
                timeout = self.fed.round_timeout_s * 2**retry
                self.log(
                    f"round {server_round}: no training site replied; sending it again "
                    f"(retry {retry} of {self.fed.round_retries}, waiting {timeout:.0f} s)"
                )
                self.sites.refresh(self.query_timeout)
                present = [s for s in training if s in self.sites.node_of]
                ok, failed = self._send(MSG_TRAIN, present, {ARRAYS: sent_record}, cfg, server_round, timeout)
            bytes_up = {s: arrays_nbytes(r.content[ARRAYS]) for s, r in ok.items()}
            bytes_down = arrays_nbytes(sent_record)
            for reply in ok.values():  # screening and aggregation in float32
                reply.content[ARRAYS] = from_transfer(reply.content[ARRAYS], self.fed.transfer_dtype)
            rejected = screen_updates(
                global_record, {s: r.content[ARRAYS] for s, r in ok.items()}, self.fed.max_update_norm_ratio
            )
            for site, reason in sorted(rejected.items()):
                self.log(f"round {server_round}: update of site {site} rejected, not averaged: {reason}")
                failed[site] = f"update rejected: {reason}"
                del ok[site]
            contents = [ok[s].content for s in sorted(ok)]
        t_wait = time.monotonic() - t0
        if len(ok) < self.fed.min_sites:
            raise QuorumError(
                f"round {server_round}: {len(ok)} training site(s) replied ({', '.join(sorted(ok)) or 'none'}), "
                f"quorum is min_sites={self.fed.min_sites}; failed: " + "; ".join(f"{s}: {r}" for s, r in sorted(failed.items()))
            )
        t1 = time.monotonic()
        new_global, _ = self.aggregator.aggregate(server_round, global_record, contents)
        t_agg = time.monotonic() - t1
        per_site = {s: {k: float(v) for k, v in r.content[METRICS].items()} for s, r in sorted(ok.items())}
        for site, reply in ok.items():
            if PRIVACY in reply.content:  # a DP-SGD site's epsilon spent and noise multiplier
                per_site[site].update({k: float(v) for k, v in reply.content[PRIVACY].items()})
            per_site[site]["bytes-down"] = float(bytes_down)
            per_site[site]["bytes-up"] = float(bytes_up[site])
        objective = self.hooks.objective(_weighted_mean(per_site, "train-loss-fused-pre"), state.global_arrays)
        blend_stats = {s: from_json(str(r.content[BLEND_STATS]["json"])) for s, r in ok.items() if BLEND_STATS in r.content}
        blend, state.meta["blend_state"] = self.hooks.update_blend(server_round, blend_stats, state.meta.get("blend_state"))
        if blend is not None:
            state.meta["blend_weights"] = blend
        blend = state.meta["blend_weights"]
        state.global_arrays = arrays_to_numpy(new_global)
        return {
            "round": server_round,
            "learning_rate": self.fed.learning_rate_at(server_round),
            "objective": objective,
            "sites_train": sorted(ok),
            "sites_failed": failed,
            "train_sites": per_site,
            "blend_weights": blend,
            "float32_bytes": float32_nbytes(global_record),
            "time_wait_s": t_wait,
            "time_aggregate_s": t_agg,
        }

    def _secure_train(
        self, state: ServerState, sites: list[str], global_record: Any, cfg: ConfigRecord, server_round: int
    ) -> tuple[dict, dict, list[RecordDict], dict[str, int]]:
        """A training round through SecAgg+ (stsfl.server.secure_aggregation): (site -> stage-3 reply,
        site -> failure, the one reply content the strategy aggregates: global + the weighted mean
        update with the total weight, site -> masked bytes up)."""
        from .secure_aggregation import SecureAggregationError, secure_round

        secure = self.fed.secure_aggregation
        weight_key = self.aggregator.weight_key
        cfg.update({WEIGHT: weight_key, CLIPPING_RANGE: float(secure.clipping_range)})
        float_names = [k for k, a in state.global_arrays.items() if a.dtype.kind == "f"]
        try:
            result = secure_round(
                lambda to, records: self._send(MSG_TRAIN, to, records, cfg, server_round),
                self.sites.node_of,
                sites,
                {ARRAYS: global_record},
                float_names,
                secure,
                self._max_weight(),
            )
        except SecureAggregationError as exc:
            raise QuorumError(f"round {server_round}: {exc}") from exc
        averaged = dict(state.global_arrays)
        for name, update in result.mean_update.items():
            averaged[name] = (state.global_arrays[name].astype(np.float64) + update).astype(averaged[name].dtype)
        total = sum(float(r.content[METRICS][weight_key]) for r in result.replies.values())
        content = RecordDict({ARRAYS: numpy_to_arrays(averaged), METRICS: MetricRecord({weight_key: total})})
        return result.replies, result.failed, [content], result.masked_bytes

    def _max_weight(self) -> float:
        """An upper bound of any site's aggregation weight (SecAgg+ quantizes weight / max_weight):
        its training patients, times the endpoints when weighting by events."""
        bounds = []
        for stats in self.sites.statistics.values():
            counts = stats["counts"]
            endpoints = len(counts.get("events", {})) if self.aggregator.weight_key == NUM_EVENTS else 1
            bounds.append(float(counts["patients"]) * max(endpoints, 1))
        return max(bounds + [1.0])

    def _evaluate(self, state: ServerState, server_round: int) -> dict[str, dict[str, float]]:
        """Every connected site evaluates the current global model (training sites: validation split)."""
        self.sites.refresh(self.query_timeout)
        present = [s for s in self.fed.sites if s in self.sites.node_of]
        cfg = self._round_config(state, server_round)
        cfg["holdout-sites"] = to_json(self.fed.holdout)
        ok, _ = self._send(MSG_EVALUATE, present, {ARRAYS: numpy_to_arrays(state.global_arrays)}, cfg, server_round)
        return {s: {k: float(v) for k, v in r.content[METRICS].items()} for s, r in sorted(ok.items())}

    def _select(self, state: ServerState, record: dict[str, Any]) -> None:
        """Keep the global model with the lowest smoothed fused-head validation loss of the training
        sites (FederationConfig.selection), unless they hold too few validation events."""
        train_eval = {s: m for s, m in record["evaluate_sites"].items() if s in self.fed.training_sites}
        score = _weighted_mean(train_eval, SELECTION_METRIC)
        events = sum(v for m in train_eval.values() for k, v in m.items() if k.startswith("eval-events-"))
        record["selection_score"], record["validation_events"] = score, events
        rule = self.fed.selection
        if score is None or events < rule.min_validation_events:
            if state.meta.get("selection_fallback") is None:
                state.meta["selection_fallback"] = (
                    f"last round: the training sites hold {events:.0f} validation events (selection.min_validation_events "
                    f"is {rule.min_validation_events}), too few to choose a round by validation loss"
                )
                self._warn(
                    state,
                    f"model selection: {state.meta['selection_fallback']}; "
                    "raise validation_fraction or lower selection.min_validation_events",
                )
            return
        previous = state.meta.get("smoothed_score")
        smoothed = score if previous is None else rule.smoothing * previous + (1.0 - rule.smoothing) * score
        state.meta["smoothed_score"] = record["selection_score_smoothed"] = smoothed
        best = state.meta.get("best_score")
        if best is None or smoothed < best:
            state.meta["best_score"] = smoothed
            state.meta["best_round"] = record["round"]
            state.best_arrays = {k: v.copy() for k, v in state.global_arrays.items()}

    def _warn(self, state: ServerState, text: str) -> None:
        """A warning on the coordinator's screen, in server.log and in summary.json (and the report)."""
        state.meta.setdefault("warnings", []).append(text)
        self.log(f"WARNING: {text}")

    def _check_learning(self, state: ServerState) -> None:
        """Warn once when the training loss has not fallen for `stall_rounds` rounds."""
        window = self.fed.stall_rounds
        losses = [_weighted_mean(r["train_sites"], "train-loss-fused") for r in state.meta["history"]]
        losses = [x for x in losses if x is not None]
        if not window or len(losses) <= window or state.meta.get("stall_warned"):
            return
        before, recent = min(losses[:-window]), min(losses[-window:])
        if recent < before * (1.0 - 1e-3):
            return
        state.meta["stall_warned"] = True
        recipe = self.fed.recipe.train
        rose = losses[-1] > losses[0] * (1.0 + 1e-3)
        self._warn(
            state,
            (
                f"the training loss has not fallen for {window} rounds ({losses[0]:.4f} in round 1, {losses[-1]:.4f} now): "
                f"the model is not learning. Likely cause: the learning rate train.lr = {recipe.lr:g} "
                f"(from {self.fed.recipe.sources['lr']}) is too "
                + ("high (the loss rose)" if rose else "low")
                + "; `sts-server check-config` shows the recipe"
            ),
        )

    def _progress_line(self, record: dict[str, Any]) -> str:
        done = round(ROUND_BAR_WIDTH * record["round"] / self.fed.rounds)
        parts = [
            f"round {record['round']}/{self.fed.rounds} [{'#' * done}{'-' * (ROUND_BAR_WIDTH - done)}]",
            f"sites {len(record['sites_train'])}/{len(self.fed.training_sites)}",
        ]
        if record.get("time_round_s") is not None:  # a rough time to go: this round's time for each one left
            seconds, left = record["time_round_s"], self.fed.rounds - record["round"]
            parts.insert(1, f"{seconds:.0f} s" + (f", ~{seconds * left:.0f} s to go" if left else ""))
        loss = _weighted_mean(record["train_sites"], "train-loss-fused")
        if loss is not None:
            parts.append(f"train loss {loss:.4f}")
        if record.get("objective") is not None:  # convex tasks: how far from converged the run still moves
            parts.append(
                f"objective {record['objective']:.6f}"
                + (f" (change {record['objective_change']:+.1e})" if record.get("objective_change") is not None else "")
            )
        if record.get("selection_score") is not None:
            parts.append(f"val loss {record['selection_score']:.4f}")
        epsilons = {s: m["dp-epsilon"] for s, m in record["train_sites"].items() if "dp-epsilon" in m}
        if epsilons:
            parts.append("DP epsilon " + ", ".join(f"{s} {e:.2f}" for s, e in sorted(epsilons.items())))
        for site in self.fed.holdout:
            metrics = record.get("evaluate_sites", {}).get(site, {})
            if metrics:
                parts.append(f"held-out {site} [{describe_metrics(metrics)}]")
        return " | ".join(parts)

    def _cross_site(self, state: ServerState) -> CrossSiteMatrix:
        """Cross-site validation of the final global model: each training site fine-tunes it for
        `cross_site.local_epochs` (no proximal term) and returns it; then every site evaluates the
        global model and every local model in one message (aggregate metrics only come back)."""
        phase_round = state.round + 1  # FedBN: fine-tuning starts from each site's own layers of the last round
        self.results.write_status("cross-site", completed_rounds=state.round)
        self.sites.refresh(self.query_timeout)
        training = [s for s in self.fed.training_sites if s in self.sites.node_of]
        cfg = self._round_config(state, phase_round)
        # A fine-tuning of its own: the recipe's schedule over these epochs, no proximal term.
        epochs = self.fed.cross_site.local_epochs
        recipe = self.fed.recipe.train.model_copy(update={"epochs_per_round": epochs, "prox_mu": 0.0})
        cfg.update(
            {
                "recipe": to_json(recipe.model_dump(mode="json")),
                "schedule-window": to_json(ScheduleWindow(start_epoch=0, total_epochs=epochs, span_epochs=epochs).model_dump()),
            }
        )
        self.log(
            f"cross-site validation: {len(training)} site(s) fine-tune the final global model "
            f"({self.fed.cross_site.local_epochs} local epoch(s))"
        )
        global_record = numpy_to_arrays(state.global_arrays)
        tuned, _ = self._send(MSG_TRAIN, training, {ARRAYS: global_record}, cfg, phase_round)
        models = {GLOBAL_MODEL: global_record}
        for site in sorted(tuned):
            models[local_model_name(site)] = tuned[site].content[ARRAYS]
            self.results.write_model(f"model_local_{site}.npz", arrays_to_numpy(tuned[site].content[ARRAYS]))
        self.sites.refresh(self.query_timeout)
        evaluating = [s for s in self.fed.sites if s in self.sites.node_of]
        eval_cfg = self._round_config(state, state.round)  # FedBN: the global model with each site's last-round layers
        eval_cfg.update({"holdout-sites": to_json(self.fed.holdout), "global-model": GLOBAL_MODEL})
        self.log(f"cross-site validation: {len(models)} model(s) evaluated at {len(evaluating)} site(s)")
        records = {f"{MODEL_PREFIX}{name}": arrays for name, arrays in models.items()}
        replies, _ = self._send(MSG_CROSS_EVALUATE, evaluating, records, eval_cfg, phase_round)
        per_site = {
            site: {
                name.removeprefix(METRICS_PREFIX): {k: float(v) for k, v in rec.items()}
                for name, rec in reply.content.metric_records.items()
                if name.startswith(METRICS_PREFIX)
            }
            for site, reply in replies.items()
        }
        matrix = CrossSiteMatrix.from_site_replies(per_site, list(models), self.fed.sites, self.fed.holdout)
        write_cross_site(self.results.root, matrix)
        for line in matrix.text_lines():
            self.log(line)
        return matrix

    # ----------------------------------------------------------------- main
    def run(self) -> dict[str, Any]:
        fed = self.fed
        self.results.copy_config(self.config_path)
        self.results.write_status("waiting-for-sites", expected=fed.sites)
        self.sites.wait_for(fed.sites, fed.wait_for_sites_s, self.query_timeout)
        if self.resume:
            state = load_checkpoint(self.results.root, log=self.log)
            self.aggregator.load_state(state.strategy_state)
            self.log(f"resuming after round {state.round} of {fed.rounds}")
        else:
            self.results.write_status("statistics")
            state = self._statistics_phase()
            run_clinical_init(self, state)
            score_clinical_start(self, state)
            save_checkpoint(self.results.root, state)
        for server_round in range(state.round + 1, fed.rounds + 1):
            self.results.write_status("training", round=server_round, completed_rounds=state.round)
            t0 = time.monotonic()
            record = self._train_round(state, server_round)
            if server_round % fed.eval_every == 0 or server_round == fed.rounds:
                record["evaluate_sites"] = self._evaluate(state, server_round)
                self._select(state, record)
            record["time_round_s"] = time.monotonic() - t0
            state.round = server_round
            previous = state.meta["history"][-1].get("objective") if state.meta["history"] else None
            if previous is not None and record["objective"] is not None:
                record["objective_change"] = record["objective"] - previous
            state.meta["history"].append(record)
            state.strategy_state = self.aggregator.state()
            save_checkpoint(self.results.root, state)
            self.results.write_history(state.meta["history"])
            self.log(self._progress_line(record))
            self._check_learning(state)
        cross_site = self._cross_site(state) if fed.cross_site.enabled else None
        baseline = None
        if fed.prediction.baseline:
            from .prediction_phases import run_prediction_phases

            baseline = run_prediction_phases(self, state)
        site_outputs = None
        if fed.site_outputs.enabled:
            from .site_outputs_phase import run_site_outputs

            site_outputs = run_site_outputs(self, state, baseline)
        return self._finish(state, cross_site, site_outputs)

    def _finish(
        self, state: ServerState, cross_site: CrossSiteMatrix | None, site_outputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        history = state.meta["history"]
        best_round = state.meta.get("best_round")
        selected = next((r for r in history if r["round"] == best_round), history[-1])
        summary = {
            "federation": self.fed.name,
            "strategy": self.fed.strategy,
            "rounds": self.fed.rounds,
            "training_sites": self.fed.training_sites,
            "holdout_sites": self.fed.holdout,
            "selected_round": selected["round"],
            "selection": state.meta.get("selection_fallback")
            or (
                f"lowest events-weighted {SELECTION_METRIC} of the training sites, smoothed over rounds "
                f"({selected.get('validation_events', 0):.0f} validation events)"
            ),
            "warnings": state.meta.get("warnings", []),
            "holdout_selected": {s: selected.get("evaluate_sites", {}).get(s) for s in self.fed.holdout},
            "holdout_final": {s: history[-1].get("evaluate_sites", {}).get(s) for s in self.fed.holdout},
            # the federated clinical Cox model the network started from, at the same centres
            "holdout_clinical_cox": state.meta.get("clinical_cox_holdout"),
            "blend_weights": state.meta.get("blend_weights"),
            "cross_site": None
            if cross_site is None
            else {"models": cross_site.models, "sites": cross_site.sites, "file": "cross_site.csv"},
            "site_outputs": site_outputs,  # counts per site; the outputs themselves stay at the sites
        }
        self.results.write_model("model_final.npz", state.global_arrays)
        self.results.write_model("model_selected.npz", state.best_arrays or state.global_arrays)
        self.results.write_json("summary.json", summary)
        self.results.write_status("done", completed_rounds=state.round)
        self.log(f"done: selected round {summary['selected_round']}; results in {self.results.root}")
        return summary
