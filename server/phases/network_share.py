"""After the last round: per endpoint, how much of the network's own part of the log-risk to keep.

The fused log-risk of endpoint k is clinical_linear[k](x) + fused_head[k](image and MLP features),
and before round 1 the fused head is zero (stsfl.server.phases.clinical_init_phase): the starting
model *is* the federated linear Cox model (clinical variables and the schema's MRI radiomics), and
the fused head's row k is everything the network adds to it. Scaling that row by a share s in
[0, 1] moves the prediction from that linear Cox model (s = 0) to the trained network (s = 1).
The images carry little for some endpoints (or the consortium has too few of their events), and a
network fitted on a few hundred patients is too sure of what it adds, so the run tries
`selection.network_shares` on the training sites' validation split (s = 1 is the selected round's
own evaluation; every other share costs one evaluation) and keeps, per endpoint, the share with the
lowest pooled validation loss (given `selection.min_share_events` validation events of that
endpoint; below them, the network as trained). The encoders are shared, the rows are not, so each
endpoint's choice leaves the others alone. The held-out centres evaluate the model kept. `[1.0]`
keeps the network as trained; `[0.0, 1.0]` chooses between the network and the linear Cox model.
"""

from __future__ import annotations

import numpy as np

from stsfl.common.site_metrics import describe_metrics
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext
from stsfl.server.phases.evaluation_phase import evaluate

FUSED_ROWS = ("fused_head.weight", "fused_head.bias")


def pooled_endpoint_loss(sites: dict[str, dict[str, float]], endpoint: str) -> tuple[float | None, float]:
    """(events-weighted mean over the sites of `val-loss-fused-{endpoint}`, its validation events)."""
    pairs = [
        (m[f"val-loss-fused-{endpoint}"], m.get(f"eval-events-{endpoint}", 0.0))
        for m in sites.values()
        if f"val-loss-fused-{endpoint}" in m
    ]
    events = sum(n for _, n in pairs)
    return (sum(v * n for v, n in pairs) / events if events > 0 else None), events


def choose_shares(
    by_share: dict[float, dict[str, dict[str, float]]], endpoints: list[str], min_events: int = 1
) -> dict[str, dict]:
    """{endpoint: {share, validation_loss: {share: loss}, events}} from each share's validation
    metrics {share: {site: metrics}}, pooled over the sites present in every evaluation. An endpoint
    with fewer than `min_events` validation events keeps the network as trained (share 1): the
    minimum over shares of a handful of events' loss is mostly chance, as for the round itself."""
    sites = set.intersection(*(set(m) for m in by_share.values()))
    choice = {}
    for endpoint in endpoints:
        pooled = {s: pooled_endpoint_loss({k: m[k] for k in sites}, endpoint) for s, m in by_share.items()}
        losses = {s: loss for s, (loss, _) in pooled.items() if loss is not None}
        events = max((n for _, n in pooled.values()), default=0.0)
        # ties go to the larger share: the network the run trained, unless the validation says otherwise
        enough = len(losses) == len(by_share) and events >= max(min_events, 1)
        share = min(losses, key=lambda s: (losses[s], -s)) if enough else 1.0
        choice[endpoint] = {"share": share, "validation_loss": {str(s): losses.get(s) for s in by_share}, "events": events}
    return choice


def with_shares(arrays: dict[str, np.ndarray], shares: list[float]) -> dict[str, np.ndarray]:
    """A copy of the model's arrays whose fused-head row k is scaled by shares[k] (0: that endpoint's
    log-risk is the clinical term alone)."""
    out = {k: v.copy() for k, v in arrays.items()}
    scale = np.asarray(shares, dtype=out[FUSED_ROWS[0]].dtype)
    out[FUSED_ROWS[0]] = out[FUSED_ROWS[0]] * scale[:, None]
    out[FUSED_ROWS[1]] = out[FUSED_ROWS[1]] * scale
    return out


def run_network_share(ctx: RunContext, state: ServerState) -> None:
    """Choose each endpoint's share on the training sites' validation split and apply it to the kept
    model (`state.best_arrays`) once the rounds are done."""
    shares = sorted(set(ctx.fed.selection.network_shares))
    if shares == [1.0] or "clinical_init" not in state.meta or any(n not in state.global_arrays for n in FUSED_ROWS):
        return
    best_round = state.meta.get("best_round")
    evaluated = [r for r in state.meta["history"] if r.get("evaluate_sites")]
    record = next((r for r in evaluated if r["round"] == best_round), evaluated[-1] if evaluated else None)
    if record is None:
        return
    endpoints = list(ctx.hooks.schema.endpoint_names)
    network = state.best_arrays or state.global_arrays
    training = ctx.fed.training_sites
    by_share: dict[float, dict[str, dict[str, float]]] = {}
    for share in shares:
        if share == 1.0:  # the kept round's own evaluation
            by_share[share] = {s: m for s, m in record["evaluate_sites"].items() if s in training}
        else:
            arrays = with_shares(network, [share] * len(endpoints))
            by_share[share] = evaluate(ctx, state, record["round"], sites=training, arrays=arrays)
    choice = choose_shares(by_share, endpoints, ctx.fed.selection.min_share_events)
    state.meta["network_share"] = choice
    for endpoint, c in choice.items():
        losses = ", ".join(f"{float(s):g}: {'-' if v is None else f'{v:.4f}'}" for s, v in c["validation_loss"].items())
        few = c["events"] < ctx.fed.selection.min_share_events
        ctx.log(
            f"{endpoint}: validation loss by the network's share of the log-risk (0: the linear Cox model it "
            f"started from) {losses} ({c['events']:.0f} events"
            + (f", fewer than selection.min_share_events {ctx.fed.selection.min_share_events}" if few else "")
            + f"): share {c['share']:g} kept"
        )
    kept = [choice[e]["share"] for e in endpoints]
    if all(s == 1.0 for s in kept):
        return
    state.best_arrays = with_shares(network, kept)
    if ctx.fed.holdout:
        scores = evaluate(ctx, state, record["round"], sites=ctx.fed.holdout, arrays=state.best_arrays)
        state.meta["holdout_kept"] = {s: scores.get(s) for s in ctx.fed.holdout}  # None: that centre did not answer
        for site, metrics in scores.items():
            ctx.log(f"held-out {site}, the kept model: {describe_metrics(metrics)}")
