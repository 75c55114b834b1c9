"""One training round: the training sites get the global weights and the round config, each replies
with new weights and aggregates (patients, events, per-head losses, timings); updates are screened
and averaged by the federation's strategy. The round completes when `min_sites` training sites
replied within `round_timeout_s` (QuorumError otherwise); when nobody replied it is sent again
(`round_retries`, each waiting twice as long)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
from flwr.app import MetricRecord, RecordDict

from stsfl.common.fed_protocol import ARRAYS, METRICS, MSG_TRAIN, NUM_EVENTS
from stsfl.common.messages import RoundConfig, TrainReply
from stsfl.common.params import arrays_nbytes, arrays_to_numpy, float32_nbytes, from_transfer, numpy_to_arrays, to_transfer
from stsfl.common.site_metrics import events_weighted_mean
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext
from stsfl.server.federation.strategies import screen_updates


class QuorumError(RuntimeError):
    """Fewer than `min_sites` training sites replied in a round."""


def train_round(ctx: RunContext, state: ServerState, server_round: int) -> dict[str, Any]:
    """Run round `server_round` on `state` (its global weights and blend weights are updated);
    returns the round's record for rounds.jsonl."""
    fed = ctx.fed
    present = ctx.messenger.training_sites(server_round)
    global_record = numpy_to_arrays(state.global_arrays)
    cfg = ctx.round_config(state, server_round)
    t0 = time.monotonic()
    if fed.secure_aggregation.enabled:
        ok, failed, contents, bytes_up = _secure_train(ctx, state, present, global_record, cfg, server_round)
        bytes_down = arrays_nbytes(global_record)
    else:
        ok, failed, bytes_down, bytes_up = _plain_train(ctx, present, global_record, cfg, server_round)
        contents = _screened(ctx, global_record, ok, failed, server_round)
    t_wait = time.monotonic() - t0
    if len(ok) < fed.min_sites:
        raise QuorumError(
            f"round {server_round}: {len(ok)} training site(s) replied ({', '.join(sorted(ok)) or 'none'}), "
            f"quorum is min_sites={fed.min_sites}; failed: " + "; ".join(f"{s}: {r}" for s, r in sorted(failed.items()))
        )
    t1 = time.monotonic()
    new_global, _ = ctx.aggregator.aggregate(server_round, global_record, contents)
    t_agg = time.monotonic() - t1
    replies = {s: TrainReply.from_record(r.content) for s, r in ok.items()}
    per_site = {s: {**replies[s].metrics, **replies[s].privacy} for s in sorted(replies)}  # DP sites: epsilon, noise
    for site in per_site:
        per_site[site]["bytes-down"] = float(bytes_down)
        per_site[site]["bytes-up"] = float(bytes_up[site])
    objective = ctx.hooks.objective(events_weighted_mean(per_site, "train-loss-fused-pre"), state.global_arrays, ctx.l2_penalty)
    blend_stats = {s: reply.blend_stats for s, reply in replies.items()}
    blend, state.meta["blend_state"] = ctx.hooks.update_blend(server_round, blend_stats, state.meta.get("blend_state"))
    if blend is not None:
        state.meta["blend_weights"] = blend
    state.global_arrays = arrays_to_numpy(new_global)
    return {
        "round": server_round,
        "learning_rate": fed.learning_rate_at(server_round),
        "objective": objective,
        "sites_train": sorted(ok),
        "sites_failed": failed,
        "train_sites": per_site,
        "blend_weights": state.meta["blend_weights"],
        "float32_bytes": float32_nbytes(global_record),
        "time_wait_s": t_wait,
        "time_aggregate_s": t_agg,
    }


def _plain_train(ctx: RunContext, present: list[str], global_record: Any, cfg: RoundConfig, server_round: int):
    """Send the round (in the federation's transfer dtype), again to the sites that answer now when
    nobody replied; returns (site -> reply with float32 weights, site -> failure, bytes sent to each
    site, site -> bytes it sent back)."""
    fed = ctx.fed
    cfg = dataclasses.replace(cfg, transfer_dtype=fed.transfer_dtype)
    sent_record = to_transfer(global_record, fed.transfer_dtype)
    ok, failed = ctx.messenger.send(MSG_TRAIN, present, {ARRAYS: sent_record}, cfg, server_round)
    for retry in range(1, fed.round_retries + 1):
        if ok:
            break
        # Nobody replied (e.g. every message expired on an overloaded machine): send the round again
        # to the sites that answer now, waiting longer, rather than end the run.
        timeout = fed.round_timeout_s * 2**retry
        ctx.log(
            f"round {server_round}: no training site replied; sending it again "
            f"(retry {retry} of {fed.round_retries}, waiting {timeout:.0f} s)"
        )
        present = ctx.messenger.connected(fed.training_sites)
        ok, failed = ctx.messenger.send(MSG_TRAIN, present, {ARRAYS: sent_record}, cfg, server_round, timeout)
    bytes_up = {s: arrays_nbytes(r.content[ARRAYS]) for s, r in ok.items()}
    for reply in ok.values():  # screening and aggregation in float32
        reply.content[ARRAYS] = from_transfer(reply.content[ARRAYS], fed.transfer_dtype)
    return ok, failed, arrays_nbytes(sent_record), bytes_up


def _screened(ctx: RunContext, global_record: Any, ok: dict, failed: dict, server_round: int) -> list[RecordDict]:
    """The reply contents to average: updates that fail screening are dropped from `ok` into `failed`."""
    rejected = screen_updates(global_record, {s: r.content[ARRAYS] for s, r in ok.items()}, ctx.fed.max_update_norm_ratio)
    for site, reason in sorted(rejected.items()):
        ctx.log(f"round {server_round}: update of site {site} rejected, not averaged: {reason}")
        failed[site] = f"update rejected: {reason}"
        del ok[site]
    return [ok[s].content for s in sorted(ok)]


def _secure_train(
    ctx: RunContext, state: ServerState, sites: list[str], global_record: Any, cfg: RoundConfig, server_round: int
) -> tuple[dict, dict, list[RecordDict], dict[str, int]]:
    """A training round through SecAgg+ (stsfl.server.federation.secure_aggregation): (site -> stage-3 reply,
    site -> failure, the one reply content the strategy aggregates: global + the weighted mean
    update with the total weight, site -> masked bytes up)."""
    from stsfl.server.federation.secure_aggregation import SecureAggregationError, secure_round

    secure = ctx.fed.secure_aggregation
    weight_key = ctx.aggregator.weight_key
    cfg = dataclasses.replace(cfg, aggregation_weight=weight_key, clipping_range=float(secure.clipping_range))
    float_names = [k for k, a in state.global_arrays.items() if a.dtype.kind == "f"]
    try:
        result = secure_round(
            lambda to, records: ctx.messenger.send(MSG_TRAIN, to, records, cfg, server_round),
            ctx.messenger.sites.node_of,
            sites,
            {ARRAYS: global_record},
            float_names,
            secure,
            _max_weight(ctx),
        )
    except SecureAggregationError as exc:
        raise QuorumError(f"round {server_round}: {exc}") from exc
    averaged = dict(state.global_arrays)
    for name, update in result.mean_update.items():
        averaged[name] = (state.global_arrays[name].astype(np.float64) + update).astype(averaged[name].dtype)
    total = sum(float(r.content[METRICS][weight_key]) for r in result.replies.values())
    content = RecordDict({ARRAYS: numpy_to_arrays(averaged), METRICS: MetricRecord({weight_key: total})})
    return result.replies, result.failed, [content], result.masked_bytes


def _max_weight(ctx: RunContext) -> float:
    """An upper bound of any site's aggregation weight (SecAgg+ quantizes weight / max_weight):
    its training patients, times the endpoints when weighting by events."""
    bounds = []
    for stats in ctx.messenger.sites.statistics.values():
        counts = stats["counts"]
        endpoints = len(counts.get("events", {})) if ctx.aggregator.weight_key == NUM_EVENTS else 1
        bounds.append(float(counts["patients"]) * max(endpoints, 1))
    return max(bounds + [1.0])
