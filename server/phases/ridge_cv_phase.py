"""Before round 1, with `l2_penalty: cv` (task linear-cox): the ridge penalty chosen by federated
cross-validation, so a consortium does not tune it by hand.

The training sites' patients are split into `ridge_cv.folds` folds by a fixed hash of the patient
id. For every penalty of `ridge_cv.grid` and every fold, the stratified ridge Cox model of the
training split without that fold is fitted by Newton steps from aggregates (each site sends, per
fit, the score and information of its rows without the fold at the current coefficients;
stsfl.common.cox_newton), all fits in one message per step. The cross-validated partial
likelihood of a penalty (Verweij & van Houwelingen 1993) sums over folds the log-likelihood of
all training rows minus that of the rows without the fold, both at the fold's fit: what the fit
says about the patients it did not see, each in its own centre's risk set. The penalty with the
largest one trains the federation -> ridge_cv.json, ridge_cv.png, summary.json `l2_penalty`.
"""

from __future__ import annotations

import numpy as np

from stsfl.common.cox_newton import CoxScore, newton_step
from stsfl.common.fed_protocol import MSG_RIDGE_CV
from stsfl.common.figures import pyplot, save_png
from stsfl.common.messages import RidgeCvQuery, RidgeCvReply
from stsfl.server.federation.checkpoint import ServerState
from stsfl.server.federation.run_context import RunContext

RIDGE_CV_FILE = "ridge_cv.json"


def run_ridge_cv(ctx: RunContext, state: ServerState) -> None:
    """Choose the run's l2 penalty (ctx.l2_penalty, state.meta["l2_penalty"]); a no-op unless `l2_penalty: cv`."""
    if ctx.fed.l2_penalty != "cv":
        return
    settings = ctx.fed.ridge_cv
    fits = [(l2, fold) for l2 in settings.grid for fold in range(settings.folds)]
    betas = np.zeros((len(fits), len(state.meta["statistics"]["mean"])))
    present = ctx.messenger.connected(ctx.fed.training_sites)
    declined: dict[str, str] = {}
    for step in range(settings.newton_steps + 1):  # the last exchange scores the final fits
        parts = _exchange(ctx, state, present, fits, betas, settings.folds, declined)
        if parts is None:
            raise RuntimeError(
                "ridge cross-validation: no training site took part"
                + "".join(f"; {site}: {why}" for site, why in sorted(declined.items()))
                + "; set l2_penalty to a number to go on"
            )
        present = [site for site in present if site not in declined]
        if step < settings.newton_steps:
            betas = np.stack([newton_step(parts[i][0], betas[i], l2) for i, (l2, _) in enumerate(fits)])
    cvpl = {l2: sum(parts[i][1] - parts[i][0].loglik for i, (g, _) in enumerate(fits) if g == l2) for l2 in settings.grid}
    chosen = max(settings.grid, key=lambda l2: cvpl[l2])
    ctx.l2_penalty = state.meta["l2_penalty"] = float(chosen)
    document = {
        "grid": settings.grid,
        "folds": settings.folds,
        "sites": sorted(present),
        "declined": declined,
        "cvpl": [cvpl[g] for g in settings.grid],
    }
    state.meta["ridge_cv"] = document | {"chosen": chosen}
    ctx.results.write_json(RIDGE_CV_FILE, state.meta["ridge_cv"])
    plot_cvpl(state.meta["ridge_cv"], ctx.results.root / "ridge_cv.png")
    for site, why in sorted(declined.items()):
        ctx.log(f"ridge cross-validation without site {site}: {why}")
    ctx.log(
        f"ridge cross-validation ({settings.folds} folds, {len(present)} sites): l2_penalty {chosen:g} "
        "(cross-validated partial log-likelihood " + ", ".join(f"{g:g}: {cvpl[g]:.2f}" for g in settings.grid) + ")"
    )


def _exchange(
    ctx: RunContext, state: ServerState, sites: list[str], fits: list, betas: np.ndarray, folds: int, declined: dict
) -> list[tuple[CoxScore, float]] | None:
    """Per fit: (the summed Cox parts without its fold, the summed log-likelihood of all rows) over
    the sites that took part (None: none did); a site that declined goes into `declined` with its reason."""
    query = RidgeCvQuery(
        run=ctx.run_config(),
        statistics=state.meta["statistics"],
        folds=folds,
        betas=[{"fold": fold, "beta": beta.tolist()} for (_, fold), beta in zip(fits, betas)],
    )
    ok, _ = ctx.messenger.send(MSG_RIDGE_CV, sites, {}, query, 0)
    if not ok:
        return None
    documents = {site: RidgeCvReply.from_record(r.content).document for site, r in sorted(ok.items())}
    declined.update({site: d["declined"] for site, d in documents.items() if "declined" in d})
    replies = [d["parts"] for site, d in documents.items() if site not in declined]
    if not replies:
        return None
    return [
        (
            CoxScore.total(CoxScore.from_dict(site[i]["without"]) for site in replies),
            sum(site[i]["all_loglik"] for site in replies),
        )
        for i in range(len(fits))
    ]


def plot_cvpl(document: dict, path) -> None:
    """The cross-validated partial log-likelihood over the grid (log scale), the chosen penalty marked."""
    fig, ax = pyplot().subplots(figsize=(4.8, 3.4))
    ax.semilogx(document["grid"], document["cvpl"], marker="o", color="C0")
    ax.axvline(document["chosen"], color="C3", ls="--", label=f"chosen {document['chosen']:g}")
    ax.set_xlabel("l2_penalty")
    ax.set_ylabel("cross-validated partial log-likelihood")
    ax.legend(fontsize=8)
    save_png(fig, path)
