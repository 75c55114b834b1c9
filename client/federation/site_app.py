"""The site's message handlers as a Flower ClientApp (`site_app`): what a site does per message.

`stsfl.client.federation.app:app` (the component Flower loads) runs these handlers in the site worker of
`sts-client` (stsfl.client.federation.site_worker), or in its own process where there is no worker: on the
virtual SuperNodes of `sts-server --simulate` and in the in-process tests (tests/inprocess_grid.py).
The site is identified by the node-config (`stsfl.client.federation.site_identity`), and every reply
carries the site name.

Handlers (message types in stsfl.common.fed_protocol):
- query.stats: per-site clinical sums and counts, event counts (the statistics phase);
- train: local training from the global weights; reply: new weights + aggregate losses (under
  secure aggregation the four SecAgg+ stages, stsfl.client.federation.secure_update: a masked update instead);
- evaluate: the global model on this site's evaluation split; reply: aggregate metrics;
- evaluate.cross: several models (cross-site validation) on the same split; reply: their metrics.
- query.clinical_cox: before round 1, the clinical Cox model's score and information at the
  coefficients sent (stsfl.server.phases.clinical_init_phase);
- query.ridge_cv: before round 1 with `l2_penalty: cv`, the Cox parts of each cross-validation fit
  (stsfl.server.phases.ridge_cv_phase);
- query.baseline: after the last round, binned events and risk sums for the baseline hazard;
- query.calibration: then, calibration and decision curves of the absolute risks;
- query.site_outputs: last, risk scores, Grad-CAM overlays and the validation report written at the
  site (stsfl.client.outputs.site_outputs); the reply holds counts only.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from stsfl.client.federation.secure_update import is_secure_round, legacy_fit_records, secure_aggregation_mod
from stsfl.client.federation.site_identity import site_identity
from stsfl.common.fed_protocol import ARRAYS, CONFIG, MODEL_PREFIX, RUN_SIMULATION_THREADS
from stsfl.common.messages import (
    BaselineQuery,
    BaselineReply,
    CalibrationQuery,
    CalibrationReply,
    ClinicalCoxQuery,
    ClinicalCoxReply,
    CrossEvaluateConfig,
    CrossEvaluateReply,
    EvaluateReply,
    RidgeCvQuery,
    RidgeCvReply,
    RoundConfig,
    RunConfig,
    SiteOutputsQuery,
    SiteOutputsReply,
    StatsReply,
    TrainReply,
)
from stsfl.common.params import from_transfer, to_transfer

site_app = ClientApp()


def _site(context: Context):
    from stsfl.client.federation.site_task import SiteTask

    task = SiteTask.from_node_config(*site_identity(context.node_config, context.run_config))
    # Simulated sites share this machine: each keeps to its share of the cores; else the site YAML's.
    threads = int(context.run_config.get(RUN_SIMULATION_THREADS, 0) or 0) or task.site.threads
    if threads:
        import torch

        torch.set_num_threads(threads)
    return task


@site_app.query("stats")
def statistics(msg: Message, context: Context) -> Message:
    task = _site(context)
    stats = task.statistics(RunConfig.from_record(msg.content[CONFIG]))
    return Message(StatsReply(task.name, stats).to_record(), reply_to=msg)


@site_app.train(mods=[secure_aggregation_mod])
def train(msg: Message, context: Context) -> Message:
    task = _site(context)
    cfg = RoundConfig.from_record(msg.content[CONFIG])
    arrays, metrics, blend_stats, privacy = task.train(from_transfer(msg.content[ARRAYS], cfg.transfer_dtype), cfg)
    if is_secure_round(msg):  # SecAgg+: the mod masks the update; no weights leave in the clear
        weight = metrics[str(cfg.aggregation_weight)]
        secure = legacy_fit_records(msg.content[ARRAYS], arrays, weight, float(cfg.clipping_range), task.name)
        return Message(TrainReply(task.name, metrics, blend_stats, privacy).to_record(secure_records=secure), reply_to=msg)
    reply = TrainReply(task.name, metrics, blend_stats, privacy, to_transfer(arrays, cfg.transfer_dtype))
    return Message(reply.to_record(), reply_to=msg)


@site_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    task = _site(context)
    metrics = task.evaluate(msg.content[ARRAYS], RoundConfig.from_record(msg.content[CONFIG]))
    return Message(EvaluateReply(task.name, metrics).to_record(), reply_to=msg)


@site_app.evaluate("cross")
def cross_evaluate(msg: Message, context: Context) -> Message:
    task = _site(context)
    models = {
        key.removeprefix(MODEL_PREFIX): arrays
        for key, arrays in msg.content.array_records.items()
        if key.startswith(MODEL_PREFIX)
    }
    per_model = task.cross_evaluate(models, CrossEvaluateConfig.from_record(msg.content[CONFIG]))
    return Message(CrossEvaluateReply(task.name, per_model).to_record(), reply_to=msg)


def _document_reply(msg: Message, context: Context, query: type, reply: type, answer: Callable) -> Message:
    """A query answered with one JSON document: `answer(site task, decoded query)`."""
    task = _site(context)
    document = answer(task, query.from_record(msg.content[CONFIG]))
    return Message(reply(task.name, document).to_record(), reply_to=msg)


@site_app.query("baseline")
def baseline(msg: Message, context: Context) -> Message:
    return _document_reply(msg, context, BaselineQuery, BaselineReply, lambda task, q: task.baseline(msg.content[ARRAYS], q))


@site_app.query("calibration")
def calibration(msg: Message, context: Context) -> Message:
    return _document_reply(
        msg, context, CalibrationQuery, CalibrationReply, lambda task, q: task.calibration(msg.content[ARRAYS], q)
    )


@site_app.query("clinical_cox")
def clinical_cox(msg: Message, context: Context) -> Message:
    return _document_reply(msg, context, ClinicalCoxQuery, ClinicalCoxReply, lambda task, q: task.clinical_cox(q))


@site_app.query("ridge_cv")
def ridge_cv(msg: Message, context: Context) -> Message:
    return _document_reply(msg, context, RidgeCvQuery, RidgeCvReply, lambda task, q: task.ridge_cv(q))


@site_app.query("site_outputs")
def site_outputs(msg: Message, context: Context) -> Message:
    task = _site(context)
    counts = task.site_outputs(msg.content[ARRAYS], SiteOutputsQuery.from_record(msg.content[CONFIG]))
    return Message(SiteOutputsReply(task.name, counts).to_record(), reply_to=msg)
