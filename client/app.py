"""Our Flower ClientApp (component `stsfl.client.app:app` in pyproject's [tool.flwr.app]).

The SuperNode started by `sts-client` runs it in a fresh process for every message, so this
module imports only Flower at top level; torch, the network and the data pipeline are imported
inside the handlers that need them. The site is identified by the SuperNode's node-config
(`site-name`, `site-config` = path of the site YAML), and every reply carries the site name.

Handlers (message types in stsfl.common.fed_protocol):
- query.stats: per-site clinical sums and counts, event counts (the statistics phase);
- train: local training from the global weights; reply: new weights + aggregate losses;
- evaluate: the global model on this site's evaluation split; reply: aggregate metrics;
- query.baseline: after the last round, binned events and risk sums for the baseline hazard;
- query.calibration: then, calibration and decision curves of the absolute risks.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from stsfl.common.fed_protocol import (
    ARRAYS,
    BASELINE,
    BLEND_STATS,
    CALIBRATION,
    CONFIG,
    METRICS,
    NODE_SITE_CONFIG,
    NODE_SITE_NAME,
    SITE,
    STATS,
    site_record,
    to_json,
)

app = ClientApp()


def _site(context: Context):
    from .site_task import SiteTask

    return SiteTask.from_node_config(
        str(context.node_config[NODE_SITE_NAME]), str(context.node_config[NODE_SITE_CONFIG])
    )


@app.query("stats")
def statistics(msg: Message, context: Context) -> Message:
    task = _site(context)
    stats = task.statistics(msg.content[CONFIG])
    content = RecordDict({SITE: site_record(task.name), STATS: ConfigRecord({"json": to_json(stats)})})
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    task = _site(context)
    arrays, metrics, blend_stats = task.train(msg.content[ARRAYS], msg.content[CONFIG])
    content = RecordDict(
        {
            SITE: site_record(task.name),
            ARRAYS: arrays,
            METRICS: MetricRecord(metrics),
            BLEND_STATS: ConfigRecord({"json": to_json(blend_stats)}),
        }
    )
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    task = _site(context)
    metrics = task.evaluate(msg.content[ARRAYS], msg.content[CONFIG])
    content = RecordDict({SITE: site_record(task.name), METRICS: MetricRecord(metrics)})
    return Message(content, reply_to=msg)


def _json_reply(msg: Message, context: Context, answer: str, key: str) -> Message:
    """A query answered with one JSON document under record `key` by SiteTask.<answer>(arrays, config)."""
    task = _site(context)
    value = getattr(task, answer)(msg.content[ARRAYS], msg.content[CONFIG])
    content = RecordDict({SITE: site_record(task.name), key: ConfigRecord({"json": to_json(value)})})
    return Message(content, reply_to=msg)


@app.query("baseline")
def baseline(msg: Message, context: Context) -> Message:
    return _json_reply(msg, context, "baseline", BASELINE)


@app.query("calibration")
def calibration(msg: Message, context: Context) -> Message:
    return _json_reply(msg, context, "calibration", CALIBRATION)
