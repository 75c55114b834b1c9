"""Before round 1: the network starts where a linear Cox model ends.

The fused head of MultimodalCoxNet has a linear term of the encoded clinical vector (the preset's
clinical.linear_skip): the schema's variables, the clinical ones and the MRI radiomics the sites
compute (`source: mri`). This phase fits it as a ridge Cox model, stratified by site, by a few Newton
steps from aggregates (stsfl.common.cox_newton: each training site sends, per endpoint, the score
and information of its training split at the current coefficients), sets it in the initial
global model and zeroes the rest of the fused head. Round 1 therefore starts from that federated
linear Cox model's log-risk, and training can only add the images' signal on top of it; a
network that started from random fused weights first had to relearn what the linear model
knows, and on small consortia ended below it.

With radiomics in the schema the phase first fits the same model on the clinical variables alone:
the clinical Cox model a hospital already has, which the network is judged against. It is kept
in the run's meta (`clinical_init.clinical_only`), never trained.

A phase that no site answers is logged and skipped: the network then starts from zero there.
With held-out centres, `score_clinical_start` has them evaluate the clinical Cox model
(summary.json `holdout_clinical_cox`), the figure the trained network has to beat, and, with
radiomics in the schema, the starting model (`holdout_start`; without them the start is the
clinical Cox model and `holdout_start` is null).
"""

from __future__ import annotations

import numpy as np

from stsfl.common.clinical_features import feature_sources
from stsfl.common.cox_newton import CoxScore, newton_step
from stsfl.common.fed_protocol import MSG_CLINICAL_COX
from stsfl.common.messages import ClinicalCoxQuery, ClinicalCoxReply
from stsfl.common.site_metrics import describe_metrics
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext
from stsfl.server.phases.evaluation_phase import evaluate

SKIP_WEIGHT = "clinical_linear.weight"


def run_clinical_init(ctx: RunContext, state: ServerState) -> None:
    """Fit the clinical term in `state.global_arrays` (no-op without one or with clinical_init.steps 0);
    with MRI radiomics in the schema, also the clinical-only Cox model the network is compared with."""
    settings = ctx.fed.clinical_init
    if settings.steps == 0 or SKIP_WEIGHT not in state.global_arrays:
        return
    weight = state.global_arrays[SKIP_WEIGHT]
    schema = ctx.hooks.schema
    present = ctx.messenger.connected(ctx.fed.training_sites)
    table = np.array([source == "table" for source in feature_sources(schema)])
    comparator = None
    if not table.all():
        comparator = _newton_fit(ctx, state, present, table, "clinical Cox model (comparator, without the radiomics)")
        if comparator is None:
            return
    fit = _newton_fit(ctx, state, present, np.ones_like(table), "linear Cox start")
    if fit is None:
        return
    beta, l2, history = fit
    state.global_arrays[SKIP_WEIGHT] = beta.astype(weight.dtype)
    for name in ("fused_head.weight", "fused_head.bias"):
        state.global_arrays[name] = np.zeros_like(state.global_arrays[name])
    endpoints = list(schema.endpoint_names)
    state.meta["clinical_init"] = {
        "steps": settings.steps,
        "l2_penalty": l2,
        "objective_per_step": history,
        "coefficient_norm": {e: float(np.linalg.norm(beta[k])) for k, e in enumerate(endpoints)},
    }
    if comparator is not None:
        state.meta["clinical_init"]["clinical_only"] = {"beta": comparator[0].tolist(), "l2_penalty": comparator[1]}


def _newton_fit(
    ctx: RunContext, state: ServerState, present: list[str], columns: np.ndarray, what: str
) -> tuple[np.ndarray, dict[str, float], dict[str, list[float]]] | None:
    """Per endpoint, the stratified ridge Cox model of the encoded clinical vector's `columns` [C]
    (the others stay 0) by clinical_init.steps Newton steps: (beta [K, C], l2 per endpoint, penalised
    log-likelihood per event per step), or None when no training site replied."""
    settings = ctx.fed.clinical_init
    endpoints = list(ctx.hooks.schema.endpoint_names)
    beta = np.zeros((len(endpoints), len(columns)), dtype=np.float64)
    run_config = ctx.run_config()
    history: dict[str, list[float]] = {e: [] for e in endpoints}
    l2: dict[str, float] = {}
    for step in range(1, settings.steps + 1):
        query = ClinicalCoxQuery(run=run_config, statistics=state.meta["statistics"], beta=beta.tolist())
        ok, _ = ctx.messenger.send(MSG_CLINICAL_COX, present, {}, query, 0)
        if not ok:
            ctx.log(f"{what}: no training site replied; the network starts from zero")
            return None
        parts = [ClinicalCoxReply.from_record(r.content).document for r in ok.values()]
        for k, endpoint in enumerate(endpoints):
            total = CoxScore.total(CoxScore.from_dict(p[endpoint]) for p in parts)
            if not total.events:
                continue
            total = CoxScore(total.score[columns], total.information[np.ix_(columns, columns)], total.events, total.loglik)
            b = beta[k, columns]
            l2.setdefault(endpoint, ridge(settings.l2_penalty, int(columns.sum()), total.events))
            history[endpoint].append(total.loglik / total.events - l2[endpoint] / 2 * float(b @ b))
            beta[k, columns] = newton_step(total, b, l2[endpoint])
        ctx.log(
            f"{what}, Newton step {step}/{settings.steps}: penalised log-likelihood per event "
            + ", ".join(f"{e} {h[-1]:.4f}" for e, h in history.items() if h)
        )
    return beta, l2, history


def clinical_only_arrays(state: ServerState) -> dict[str, np.ndarray] | None:
    """The starting model with the clinical-only Cox fit as its linear term (None: the start is clinical-only)."""
    clinical = state.meta.get("clinical_init", {}).get("clinical_only")
    if clinical is None:
        return None
    arrays = dict(state.global_arrays)
    arrays[SKIP_WEIGHT] = np.asarray(clinical["beta"], dtype=arrays[SKIP_WEIGHT].dtype)
    return arrays


def score_clinical_start(ctx: RunContext, state: ServerState) -> None:
    """The held-out centres evaluate, with round 1's config before round 1 (message group 0), the
    model the network starts from (after `run_clinical_init`) and, with radiomics in the schema, the
    clinical-only Cox model."""
    if "clinical_init" not in state.meta or not ctx.fed.holdout:
        return
    scores = evaluate(ctx, state, 1, sites=ctx.fed.holdout, group=0)
    if not scores:
        return
    state.meta["clinical_cox_holdout"] = scores
    for site, metrics in scores.items():
        ctx.log(f"held-out {site}, the linear Cox model the network starts from: {describe_metrics(metrics)}")
    clinical = clinical_only_arrays(state)
    if clinical is None:
        return
    state.meta["start_holdout"] = scores
    state.meta["clinical_cox_holdout"] = evaluate(ctx, state, 1, sites=ctx.fed.holdout, group=0, arrays=clinical)
    for site, metrics in state.meta["clinical_cox_holdout"].items():
        ctx.log(f"held-out {site}, the clinical Cox model (no radiomics; the comparator): {describe_metrics(metrics)}")


def ridge(setting: float | str, features: int, events: int) -> float:
    """The ridge weight of an endpoint: the setting, or for "auto" features / events (a prior worth
    about one event per coefficient; a small consortium with ~30 events and ~40 clinical features
    otherwise fits noise that ranks a new centre's patients backwards)."""
    return features / events if setting == "auto" else float(setting)
