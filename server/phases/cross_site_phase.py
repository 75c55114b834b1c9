"""Cross-site validation after the last round (`cross_site.enabled`): each training site fine-tunes
the final global model for `cross_site.local_epochs` (no proximal term) and returns it; then every
site evaluates the global model and every local model in one message (aggregate metrics only come
back) -> cross_site.csv / .json / .png (stsfl.server.phases.cross_site)."""

from __future__ import annotations

import dataclasses

from stsfl.common.config import ScheduleWindow
from stsfl.common.fed_protocol import ARRAYS, MODEL_PREFIX, MSG_CROSS_EVALUATE, MSG_TRAIN
from stsfl.common.messages import CrossEvaluateConfig, CrossEvaluateReply
from stsfl.common.params import arrays_to_numpy, numpy_to_arrays
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext
from stsfl.server.phases.cross_site import GLOBAL_MODEL, CrossSiteMatrix, local_model_name, write_cross_site


def run_cross_site(ctx: RunContext, state: ServerState) -> CrossSiteMatrix:
    fed = ctx.fed
    phase_round = state.round + 1  # FedBN: fine-tuning starts from each site's own layers of the last round
    ctx.results.write_status("cross-site", completed_rounds=state.round)
    training = ctx.messenger.connected(fed.training_sites)
    # A fine-tuning of its own: the recipe's schedule over these epochs, no proximal term.
    epochs = fed.cross_site.local_epochs
    cfg = ctx.round_config(state, phase_round)
    recipe = fed.recipe.train.model_copy(update={"epochs_per_round": epochs, "prox_mu": 0.0})
    cfg = dataclasses.replace(
        cfg,
        run=dataclasses.replace(cfg.run, recipe=recipe),
        schedule_window=ScheduleWindow(start_epoch=0, total_epochs=epochs, span_epochs=epochs),
    )
    ctx.log(f"cross-site validation: {len(training)} site(s) fine-tune the final global model ({epochs} local epoch(s))")
    global_record = numpy_to_arrays(state.global_arrays)
    tuned, _ = ctx.messenger.send(MSG_TRAIN, training, {ARRAYS: global_record}, cfg, phase_round)
    models = {GLOBAL_MODEL: global_record}
    for site in sorted(tuned):
        models[local_model_name(site)] = tuned[site].content[ARRAYS]
        ctx.results.write_model(f"model_local_{site}.npz", arrays_to_numpy(tuned[site].content[ARRAYS]))
    evaluating = ctx.messenger.connected(fed.sites)
    # FedBN: the global model with each site's last-round layers
    eval_cfg = CrossEvaluateConfig(round=ctx.round_config(state, state.round), global_model=GLOBAL_MODEL)
    ctx.log(f"cross-site validation: {len(models)} model(s) evaluated at {len(evaluating)} site(s)")
    records = {f"{MODEL_PREFIX}{name}": arrays for name, arrays in models.items()}
    replies, _ = ctx.messenger.send(MSG_CROSS_EVALUATE, evaluating, records, eval_cfg, phase_round)
    per_site = {site: CrossEvaluateReply.from_record(reply.content).per_model for site, reply in replies.items()}
    matrix = CrossSiteMatrix.from_site_replies(per_site, list(models), fed.sites, fed.holdout)
    write_cross_site(ctx.results.root, matrix)
    for line in matrix.text_lines():
        ctx.log(line)
    return matrix
