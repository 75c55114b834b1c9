"""The site's message handlers as a Flower ClientApp (`site_app`): what a site does per message.

`stsfl.client.app:app` (the component Flower loads) runs these handlers in the site worker of
`sts-client` (stsfl.client.site_worker), or in its own process where there is no worker: on the
virtual SuperNodes of `sts-server --simulate` and in the in-process tests (tests/inprocess_grid.py).
The site is identified by the node-config (`stsfl.client.app.site_identity`), and every reply
carries the site name.

Handlers (message types in stsfl.common.fed_protocol):
- query.stats: per-site clinical sums and counts, event counts (the statistics phase);
- train: local training from the global weights; reply: new weights + aggregate losses (under
  secure aggregation the four SecAgg+ stages, stsfl.client.secure_update: a masked update instead);
- evaluate: the global model on this site's evaluation split; reply: aggregate metrics;
- evaluate.cross: several models (cross-site validation) on the same split; reply: their metrics.
- query.clinical_cox: before round 1, the clinical Cox model's score and information at the
  coefficients sent (stsfl.server.clinical_init_phase);
- query.baseline: after the last round, binned events and risk sums for the baseline hazard;
- query.calibration: then, calibration and decision curves of the absolute risks;
- query.site_outputs: last, risk scores, Grad-CAM overlays and the validation report written at the
  site (stsfl.client.site_outputs); the reply holds counts only.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from stsfl.common.fed_protocol import (
    ARRAYS,
    BASELINE,
    BLEND_STATS,
    CALIBRATION,
    CLINICAL_COX,
    CLIPPING_RANGE,
    CONFIG,
    METRICS,
    METRICS_PREFIX,
    MODEL_PREFIX,
    PRIVACY,
    RUN_SIMULATION_THREADS,
    SITE,
    STATS,
    WEIGHT,
    site_record,
    to_json,
)
from stsfl.common.params import from_transfer, to_transfer

from .app import site_identity
from .secure_update import is_secure_round, legacy_fit_records, secure_aggregation_mod

site_app = ClientApp()


def _site(context: Context):
    from .site_task import SiteTask

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
    stats = task.statistics(msg.content[CONFIG])
    content = RecordDict({SITE: site_record(task.name), STATS: ConfigRecord({"json": to_json(stats)})})
    return Message(content, reply_to=msg)


@site_app.train(mods=[secure_aggregation_mod])
def train(msg: Message, context: Context) -> Message:
    task = _site(context)
    cfg = msg.content[CONFIG]
    transfer = str(cfg.get("transfer-dtype", "float32"))  # the federation's transfer_dtype, both directions
    arrays, metrics, blend_stats, privacy = task.train(from_transfer(msg.content[ARRAYS], transfer), cfg)
    if is_secure_round(msg):  # SecAgg+: the mod masks the update; no weights leave in the clear
        update = legacy_fit_records(msg.content[ARRAYS], arrays, metrics[str(cfg[WEIGHT])], float(cfg[CLIPPING_RANGE]), task.name)
    else:
        update = {ARRAYS: to_transfer(arrays, transfer)}
    content = RecordDict(
        {
            SITE: site_record(task.name),
            **update,
            METRICS: MetricRecord(metrics),
            BLEND_STATS: ConfigRecord({"json": to_json(blend_stats)}),
            **({PRIVACY: ConfigRecord(privacy)} if privacy else {}),
        }
    )
    return Message(content, reply_to=msg)


@site_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    task = _site(context)
    metrics = task.evaluate(msg.content[ARRAYS], msg.content[CONFIG])
    content = RecordDict({SITE: site_record(task.name), METRICS: MetricRecord(metrics)})
    return Message(content, reply_to=msg)


@site_app.evaluate("cross")
def cross_evaluate(msg: Message, context: Context) -> Message:
    task = _site(context)
    models = {
        key.removeprefix(MODEL_PREFIX): arrays
        for key, arrays in msg.content.array_records.items()
        if key.startswith(MODEL_PREFIX)
    }
    per_model = task.cross_evaluate(models, msg.content[CONFIG])
    content = RecordDict(
        {SITE: site_record(task.name), **{f"{METRICS_PREFIX}{name}": MetricRecord(m) for name, m in per_model.items()}}
    )
    return Message(content, reply_to=msg)


def _json_reply(msg: Message, context: Context, answer: str, key: str) -> Message:
    """A query answered with one JSON document under record `key` by SiteTask.<answer>(arrays, config)."""
    task = _site(context)
    value = getattr(task, answer)(msg.content[ARRAYS], msg.content[CONFIG])
    content = RecordDict({SITE: site_record(task.name), key: ConfigRecord({"json": to_json(value)})})
    return Message(content, reply_to=msg)


@site_app.query("baseline")
def baseline(msg: Message, context: Context) -> Message:
    return _json_reply(msg, context, "baseline", BASELINE)


@site_app.query("calibration")
def calibration(msg: Message, context: Context) -> Message:
    return _json_reply(msg, context, "calibration", CALIBRATION)


@site_app.query("clinical_cox")
def clinical_cox(msg: Message, context: Context) -> Message:
    task = _site(context)
    parts = task.clinical_cox(msg.content[CONFIG])
    content = RecordDict({SITE: site_record(task.name), CLINICAL_COX: ConfigRecord({"json": to_json(parts)})})
    return Message(content, reply_to=msg)


@site_app.query("site_outputs")
def site_outputs(msg: Message, context: Context) -> Message:
    task = _site(context)
    counts = task.site_outputs(msg.content[ARRAYS], msg.content[CONFIG])
    content = RecordDict({SITE: site_record(task.name), METRICS: MetricRecord({k: int(v) for k, v in counts.items()})})
    return Message(content, reply_to=msg)
