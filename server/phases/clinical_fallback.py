"""After the last round: per endpoint, the kept network or the clinical Cox model it started from.

The fused log-risk of endpoint k is fused_head[k](image and MLP features) + clinical_linear[k](x),
and before round 1 the fused head is zero (stsfl.server.phases.clinical_init_phase): the starting
model *is* the federated clinical Cox model. The images carry little for some endpoints (or the
consortium is too small to learn it), and there the trained network can end below that model. So
for each endpoint the run compares the training sites' pooled validation loss of the selected
model with that of the clinical Cox start (both evaluated on the same validation patients), and
where the network is not lower it sets that endpoint's fused-head row to zero: the kept model then
predicts exactly the clinical Cox log-risk for that endpoint and the network's for the others
(the encoders are shared, the rows are not). The held-out centres evaluate the model again, so
the summary shows what is kept. `selection.clinical_fallback: false` keeps the network everywhere.
"""

from __future__ import annotations

import numpy as np

from stsfl.common.site_metrics import describe_metrics
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext
from stsfl.server.phases.evaluation_phase import evaluate

FUSED_ROWS = ("fused_head.weight", "fused_head.bias")
NETWORK, CLINICAL_COX = "network", "clinical_cox"


def pooled_endpoint_loss(sites: dict[str, dict[str, float]], endpoint: str) -> tuple[float | None, float]:
    """(events-weighted mean over the sites of `val-loss-fused-{endpoint}`, its validation events)."""
    pairs = [
        (m[f"val-loss-fused-{endpoint}"], m.get(f"eval-events-{endpoint}", 0.0))
        for m in sites.values()
        if f"val-loss-fused-{endpoint}" in m
    ]
    events = sum(n for _, n in pairs)
    return (sum(v * n for v, n in pairs) / events if events > 0 else None), events


def choose_per_endpoint(
    network: dict[str, dict[str, float]], clinical: dict[str, dict[str, float]], endpoints: list[str]
) -> dict[str, dict]:
    """{endpoint: {kept, network, clinical_cox, events}}: the clinical Cox model where the selected
    network's pooled validation loss is not below it over the same sites; the network where either
    has no validation events (nothing to compare)."""
    shared = sorted(set(network) & set(clinical))
    choice = {}
    for endpoint in endpoints:
        net, events = pooled_endpoint_loss({s: network[s] for s in shared}, endpoint)
        cox, _ = pooled_endpoint_loss({s: clinical[s] for s in shared}, endpoint)
        kept = CLINICAL_COX if net is not None and cox is not None and net >= cox else NETWORK
        choice[endpoint] = {"kept": kept, NETWORK: net, CLINICAL_COX: cox, "events": events}
    return choice


def without_rows(arrays: dict[str, np.ndarray], rows: list[int]) -> dict[str, np.ndarray]:
    """A copy of the model's arrays whose fused head gives 0 for endpoints `rows` (their log-risk
    becomes the clinical term alone)."""
    out = {k: v.copy() for k, v in arrays.items()}
    for name in FUSED_ROWS:
        out[name][rows] = 0
    return out


def run_clinical_fallback(ctx: RunContext, state: ServerState) -> None:
    """Apply the per-endpoint choice to the kept model (`state.best_arrays`) once the rounds are done."""
    start = state.meta.get("clinical_cox_validation")
    if not ctx.fed.selection.clinical_fallback or not start or any(n not in state.global_arrays for n in FUSED_ROWS):
        return
    best_round = state.meta.get("best_round")
    evaluated = [r for r in state.meta["history"] if r.get("evaluate_sites")]
    record = next((r for r in evaluated if r["round"] == best_round), evaluated[-1] if evaluated else None)
    if record is None:
        return
    endpoints = list(ctx.hooks.schema.endpoint_names)
    network = {s: m for s, m in record["evaluate_sites"].items() if s in ctx.fed.training_sites}
    choice = choose_per_endpoint(network, start, endpoints)
    state.meta["clinical_fallback"] = choice
    for endpoint, c in choice.items():
        if c["network"] is None or c["clinical_cox"] is None:
            ctx.log(f"{endpoint}: no validation events to compare the network with the clinical Cox model; the network is kept")
            continue
        ctx.log(
            f"{endpoint}: validation loss of the network {c['network']:.4f}, of the clinical Cox model it started from "
            f"{c['clinical_cox']:.4f} ({c['events']:.0f} events): "
            + ("the network is kept" if c["kept"] == NETWORK else "the clinical Cox model is kept for this endpoint")
        )
    rows = [k for k, e in enumerate(endpoints) if choice[e]["kept"] == CLINICAL_COX]
    if not rows:
        return
    state.best_arrays = without_rows(state.best_arrays or state.global_arrays, rows)
    if ctx.fed.holdout:
        scores = evaluate(ctx, state, record["round"], sites=ctx.fed.holdout, arrays=state.best_arrays)
        state.meta["holdout_kept"] = {s: scores.get(s) for s in ctx.fed.holdout}  # None: that centre did not answer
        for site, metrics in scores.items():
            ctx.log(f"held-out {site}, the kept model: {describe_metrics(metrics)}")
