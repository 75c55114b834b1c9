"""The statistics phase: every site (training and held out) has answered the who-are-you query with
its clinical sums and counts and its event counts (stsfl.server.federation.sites); the task's server side
combines the training sites' into the global statistics (standardisation, category sets) and builds
the initial global model from them -> statistics.json."""

from __future__ import annotations

from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext


def run_statistics_phase(ctx: RunContext) -> ServerState:
    """The run's state before round 1: the initial global weights and the statistics every site reads."""
    fed = ctx.fed
    per_site = {site: ctx.messenger.sites.statistics[site] for site in fed.sites}
    statistics = ctx.hooks.combine_statistics(per_site)
    ctx.results.write_json("statistics.json", {"global": statistics, "per_site_counts": ctx.hooks.site_counts(per_site)})
    arrays = ctx.hooks.initial_arrays(statistics, fed.seed)
    ctx.log(f"statistics phase: {len(per_site)} sites; model with {sum(a.size for a in arrays.values()):,} values")
    return ServerState(
        round=0,
        global_arrays=arrays,
        meta={
            "statistics": statistics,
            "blend_weights": ctx.hooks.initial_blend_weights(),
            "blend_state": None,
            "history": [],
            "best_round": None,
            "best_score": None,
        },
    )
