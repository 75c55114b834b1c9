"""What the coordinator shows and keeps of a run: the round line on its screen and summary.json."""

from __future__ import annotations

from typing import Any

from stsfl.common.config import FederationConfig
from stsfl.common.site_metrics import describe_metrics, events_weighted_mean
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext
from stsfl.server.phases.cross_site import CrossSiteMatrix
from stsfl.server.phases.evaluation_phase import SELECTION_METRIC

ROUND_BAR_WIDTH = 10  # the round line's progress bar, in ASCII: it also goes to server.log


def progress_line(fed: FederationConfig, record: dict[str, Any]) -> str:
    """One line per round: bar, time and time to go, sites, losses, DP epsilon, held-out metrics."""
    done = round(ROUND_BAR_WIDTH * record["round"] / fed.rounds)
    parts = [
        f"round {record['round']}/{fed.rounds} [{'#' * done}{'-' * (ROUND_BAR_WIDTH - done)}]",
        f"sites {len(record['sites_train'])}/{len(fed.training_sites)}",
    ]
    if record.get("time_round_s") is not None:  # a rough time to go: this round's time for each one left
        seconds, left = record["time_round_s"], fed.rounds - record["round"]
        parts.insert(1, f"{seconds:.0f} s" + (f", ~{seconds * left:.0f} s to go" if left else ""))
    loss = events_weighted_mean(record["train_sites"], "train-loss-fused")
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
    for site in fed.holdout:
        metrics = record.get("evaluate_sites", {}).get(site, {})
        if metrics:
            parts.append(f"held-out {site} [{describe_metrics(metrics)}]")
    return " | ".join(parts)


def write_summary(
    ctx: RunContext, state: ServerState, cross_site: CrossSiteMatrix | None, site_outputs: dict[str, Any] | None
) -> dict[str, Any]:
    """summary.json, the final and selected models, status done; returns the summary."""
    fed = ctx.fed
    history = state.meta["history"]
    best_round = state.meta.get("best_round")
    selected = next((r for r in history if r["round"] == best_round), history[-1])
    summary = {
        "federation": fed.name,
        "strategy": fed.strategy,
        "rounds": fed.rounds,
        "training_sites": fed.training_sites,
        "holdout_sites": fed.holdout,
        "selected_round": selected["round"],
        "selection": state.meta.get("selection_fallback")
        or (
            f"lowest events-weighted {SELECTION_METRIC} of the training sites, smoothed over rounds "
            f"({selected.get('validation_events', 0):.0f} validation events)"
        ),
        "warnings": state.meta.get("warnings", []),
        # the kept model: the selected round's, with each endpoint's network share applied
        "holdout_selected": state.meta["holdout_kept"]
        if "holdout_kept" in state.meta
        else {s: selected.get("evaluate_sites", {}).get(s) for s in fed.holdout},
        "holdout_final": {s: history[-1].get("evaluate_sites", {}).get(s) for s in fed.holdout},
        # at the same centres: the federated clinical Cox model (the comparator) and, with the schema's
        # MRI radiomics, the linear Cox model the network started from (null without them)
        "holdout_clinical_cox": state.meta.get("clinical_cox_holdout"),
        "holdout_start": state.meta.get("start_holdout"),
        "network_share": state.meta.get("network_share"),
        "blend_weights": state.meta.get("blend_weights"),
        "l2_penalty": ctx.l2_penalty,  # the ridge penalty the sites trained with (chosen by ridge_cv.json with `cv`)
        "cross_site": None
        if cross_site is None
        else {"models": cross_site.models, "sites": cross_site.sites, "file": "cross_site.csv"},
        "site_outputs": site_outputs,  # counts per site; the outputs themselves stay at the sites
    }
    ctx.results.write_model("model_final.npz", state.global_arrays)
    ctx.results.write_model("model_selected.npz", state.best_arrays or state.global_arrays)
    ctx.results.write_json("summary.json", summary)
    ctx.results.write_status("done", completed_rounds=state.round)
    ctx.log(f"done: selected round {summary['selected_round']}; results in {ctx.results.root}")
    return summary
