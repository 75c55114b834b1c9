"""Evaluation of the global model and the choice of the model the run keeps.

Every `eval_every` rounds and after the last, all sites evaluate the global model (training sites on
their validation split: the fused-head loss used for model selection; held-out centres on all their
patients: C-index, td-AUC, IBS, events). The run keeps the round with the lowest smoothed
validation loss, and warns when the training loss stops falling.
"""

from __future__ import annotations

import math

import numpy as np

from stsfl.common.config import FederationConfig
from stsfl.common.fed_protocol import ARRAYS, MSG_EVALUATE
from stsfl.common.messages import EvaluateReply
from stsfl.common.params import numpy_to_arrays
from stsfl.common.site_metrics import events_weighted_mean
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext

# Fused-head validation loss reported by training sites at evaluation: the model-selection score.
SELECTION_METRIC = "val-loss-fused"
# A run whose training loss fell this far below round 1's has learned: a later plateau is convergence.
LEARNED_DROP = 0.01


def evaluate(
    ctx: RunContext,
    state: ServerState,
    server_round: int,
    sites: list[str] | None = None,
    group: int | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """`sites` (default: every site of the federation) that are connected evaluate `arrays` (default the
    current global model) with the config of `server_round` (message group `group`, default the
    round); site -> metrics."""
    present = ctx.messenger.connected(ctx.fed.sites if sites is None else sites)
    cfg = ctx.round_config(state, server_round)
    group = server_round if group is None else group
    model = state.global_arrays if arrays is None else arrays
    ok, _ = ctx.messenger.send(MSG_EVALUATE, present, {ARRAYS: numpy_to_arrays(model)}, cfg, group)
    return {s: EvaluateReply.from_record(r.content).metrics for s, r in sorted(ok.items())}


def select(ctx: RunContext, state: ServerState, record: dict) -> None:
    """Keep the global model with the lowest smoothed fused-head validation loss of the training
    sites (FederationConfig.selection), unless they hold too few validation events."""
    train_eval = {s: m for s, m in record["evaluate_sites"].items() if s in ctx.fed.training_sites}
    score = events_weighted_mean(train_eval, SELECTION_METRIC)
    events = sum(v for m in train_eval.values() for k, v in m.items() if k.startswith("eval-events-"))
    record["selection_score"], record["validation_events"] = score, events
    rule = ctx.fed.selection
    if score is None or events < rule.min_validation_events:
        if state.meta.get("selection_fallback") is None:
            state.meta["selection_fallback"] = (
                f"last round: the training sites hold {events:.0f} validation events (selection.min_validation_events "
                f"is {rule.min_validation_events}), too few to choose a round by validation loss"
            )
            ctx.warn(
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


def warmup_rounds(fed: FederationConfig) -> int:
    """The rounds of the schedule's warm-up, whose small rates need not move the loss."""
    recipe = fed.recipe.train
    return 0 if recipe.schedule == "constant" else math.ceil(recipe.warmup_fraction * fed.rounds)


def check_learning(ctx: RunContext, state: ServerState) -> None:
    """Warn once when, after the warm-up, the training loss has not fallen for `stall_rounds` rounds
    and never fell more than LEARNED_DROP below round 1's (a learning rate too low, or one so high it rose)."""
    window = ctx.fed.stall_rounds
    losses = [events_weighted_mean(r["train_sites"], "train-loss-fused") for r in state.meta["history"]]
    losses = [x for x in losses if x is not None]
    if not window or len(losses) <= warmup_rounds(ctx.fed) + window or state.meta.get("stall_warned"):
        return
    before, recent = min(losses[:-window]), min(losses[-window:])
    if recent < before * (1.0 - 1e-3):
        return
    if min(losses) < losses[0] * (1.0 - LEARNED_DROP):  # it learned, then levelled off: converging, not stalled
        return
    state.meta["stall_warned"] = True
    recipe = ctx.fed.recipe.train
    rose = losses[-1] > losses[0] * (1.0 + 1e-3)
    ctx.warn(
        state,
        (
            f"the training loss has not fallen for {window} rounds ({losses[0]:.4f} in round 1, {losses[-1]:.4f} now): "
            f"the model is not learning. Likely cause: the learning rate train.lr = {recipe.lr:g} "
            f"(from {ctx.fed.recipe.sources['lr']}) is too "
            + ("high (the loss rose)" if rose else "low")
            + "; `sts-server check-config` shows the recipe"
        ),
    )
