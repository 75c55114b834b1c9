"""Before round 1: the network starts where a clinical Cox model ends.

The fused head of MultimodalCoxNet has a linear term of the clinical vector (the preset's
clinical.linear_skip). This phase fits it as a ridge Cox model, stratified by site, by a few Newton
steps from aggregates (stsfl.common.cox_newton: each training site sends, per endpoint, the score
and information of its training split at the current coefficients), sets it in the initial
global model and zeroes the rest of the fused head. Round 1 therefore starts from the federated
clinical Cox model's log-risk, and training can only add the images' signal on top of it; a
network that started from random fused weights first had to relearn what the clinical Cox model
knows, and on small consortia ended below it.

A phase that no site answers is logged and skipped: the network then starts from zero there.
With held-out centres, `score_clinical_start` has them evaluate that starting model: the
federated clinical Cox model's held-out C, the figure the trained network has to beat
(summary.json `holdout_clinical_cox`).
"""

from __future__ import annotations

import numpy as np

from stsfl.common.cox_newton import CoxScore, newton_step
from stsfl.common.fed_protocol import MSG_CLINICAL_COX
from stsfl.common.messages import ClinicalCoxQuery, ClinicalCoxReply
from stsfl.common.site_metrics import describe_metrics
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext
from stsfl.server.phases.evaluation_phase import evaluate

SKIP_WEIGHT = "clinical_linear.weight"


def run_clinical_init(ctx: RunContext, state: ServerState) -> None:
    """Fit the clinical term in `state.global_arrays` (no-op without one or with clinical_init.steps 0)."""
    settings = ctx.fed.clinical_init
    if settings.steps == 0 or SKIP_WEIGHT not in state.global_arrays:
        return
    weight = state.global_arrays[SKIP_WEIGHT]
    endpoints = list(ctx.hooks.schema.endpoint_names)
    beta = np.zeros(weight.shape, dtype=np.float64)
    run_config = ctx.run_config()
    present = ctx.messenger.connected(ctx.fed.training_sites)
    history: dict[str, list[float]] = {e: [] for e in endpoints}
    l2: dict[str, float] = {}
    for step in range(1, settings.steps + 1):
        query = ClinicalCoxQuery(run=run_config, statistics=state.meta["statistics"], beta=beta.tolist())
        ok, _ = ctx.messenger.send(MSG_CLINICAL_COX, present, {}, query, 0)
        if not ok:
            ctx.log("clinical Cox initialisation: no training site replied; the network starts from zero")
            return
        parts = [ClinicalCoxReply.from_record(r.content).document for r in ok.values()]
        for k, endpoint in enumerate(endpoints):
            total = CoxScore.total(CoxScore.from_dict(p[endpoint]) for p in parts)
            if not total.events:
                continue
            l2.setdefault(endpoint, ridge(settings.l2_penalty, weight.shape[1], total.events))
            history[endpoint].append(total.loglik / total.events - l2[endpoint] / 2 * float(beta[k] @ beta[k]))
            beta[k] = newton_step(total, beta[k], l2[endpoint])
        ctx.log(
            f"clinical Cox initialisation, Newton step {step}/{settings.steps}: penalised log-likelihood per event "
            + ", ".join(f"{e} {h[-1]:.4f}" for e, h in history.items() if h)
        )
    state.global_arrays[SKIP_WEIGHT] = beta.astype(weight.dtype)
    for name in ("fused_head.weight", "fused_head.bias"):
        state.global_arrays[name] = np.zeros_like(state.global_arrays[name])
    state.meta["clinical_init"] = {
        "steps": settings.steps,
        "l2_penalty": l2,
        "objective_per_step": history,
        "coefficient_norm": {e: float(np.linalg.norm(beta[k])) for k, e in enumerate(endpoints)},
    }


def score_clinical_start(ctx: RunContext, state: ServerState) -> None:
    """The held-out centres evaluate the model the network starts from (after `run_clinical_init`),
    with round 1's config, before round 1 (message group 0)."""
    if "clinical_init" not in state.meta or not ctx.fed.holdout:
        return
    scores = evaluate(ctx, state, 1, sites=ctx.fed.holdout, group=0)
    if not scores:
        return
    state.meta["clinical_cox_holdout"] = scores
    for site, metrics in scores.items():
        ctx.log(f"held-out {site}, the clinical Cox model the network starts from: {describe_metrics(metrics)}")


def ridge(setting: float | str, features: int, events: int) -> float:
    """The ridge weight of an endpoint: the setting, or for "auto" features / events (a prior worth
    about one event per coefficient; a small consortium with ~30 events and ~40 clinical features
    otherwise fits noise that ranks a new centre's patients backwards)."""
    return features / events if setting == "auto" else float(setting)
