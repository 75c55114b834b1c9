"""What travels between our ServerApp and ClientApp: message types and record keys.

Every message the server sends holds an ArrayRecord "arrays" (model parameters, absent for
queries) and a ConfigRecord "config" (its keys: the config dataclasses of stsfl.common.messages). Every reply holds a ConfigRecord "site" with the site's
name (taken from the SuperNode's node-config, never from patient data), a MetricRecord
"metrics" (aggregates only: counts, losses, C-indices), and, for training, the ArrayRecord
"arrays". Larger structured values (federated clinical statistics, blend weights) travel as
JSON strings inside ConfigRecords: they are small and this keeps one schema in Python.
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ConfigRecord

# Message types (`<category>.<action>`, see flwr.clientapp.ClientApp).
MSG_STATS = "query.stats"  # site name + per-site clinical sums/counts + event counts
MSG_TRAIN = "train"  # local training from the global model; reply: new weights + losses
MSG_EVALUATE = "evaluate"  # evaluate the global model on a site's evaluation split
# Cross-site validation: several models in one message (ArrayRecords "model/<name>"), one
# MetricRecord "metrics/<name>" per model in the reply. Local fine-tuning reuses MSG_TRAIN.
MSG_CROSS_EVALUATE = "evaluate.cross"
MSG_BASELINE = "query.baseline"  # after the last round: binned events / risk sums for the baseline hazard
MSG_CALIBRATION = "query.calibration"  # then: calibration and decision curves of the absolute risks
MSG_CLINICAL_COX = "query.clinical_cox"  # before round 1: score and information of the clinical Cox model at beta
MSG_RIDGE_CV = "query.ridge_cv"  # before round 1 (`l2_penalty: cv`): Cox score and information per fold and penalty
MSG_SITE_OUTPUTS = "query.site_outputs"  # last: each site writes its own patients' outputs at the site; counts come back

# Record keys.
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SITE = "site"
STATS = "stats"
# keys of the statistics reply's JSON besides the statistics: the site's own schema fingerprint (per
# column digests, stsfl.common.config.schema) and, from a site that cannot serve the run, why (one line)
STATS_SCHEMA_FINGERPRINT = "schema-fingerprint"
STATS_UNUSABLE = "unusable"
PRIVACY = "privacy"  # train reply of a DP-SGD site (ConfigRecord): dp-epsilon, dp-noise-multiplier; Flower averages the one MetricRecord
BLEND_STATS = "blend-stats"  # train reply: per-head pooled-loss statistics (sums, event counts) as JSON
BASELINE = "baseline"  # baseline reply: per endpoint, bins on the shared grid + log-risk histogram, as JSON
CALIBRATION = "calibration"  # calibration reply: per endpoint and horizon, decile curves and counts, as JSON
RIDGE_CV = (
    "ridge-cv"  # its reply: per (fold, coefficients), the Cox parts without the fold and the log-likelihood of all, as JSON
)
CLINICAL_COX = "clinical-cox"  # its reply: per endpoint score, information, events, log-likelihood, as JSON

MODEL_PREFIX = "model/"
METRICS_PREFIX = "metrics/"

# node-config keys a SuperNode is started with (see `sts-client`).
NODE_SITE_NAME = "site-name"
NODE_SITE_CONFIG = "site-config"
# The folder of the site worker's socket (stsfl.client.federation.worker_channel): set by `sts-client`, absent
# where the ClientApp handles messages in its own process (simulation engine, in-process tests).
NODE_WORKER_DIR = "worker-dir"
# A virtual SuperNode of the simulation engine has only Flower's partition id in its node-config;
# the run config's `simulation-sites` (JSON list of [site name, site YAML]) says which site it is.
NODE_PARTITION_ID = "partition-id"
RUN_SIMULATION_SITES = "simulation-sites"
RUN_SIMULATION_THREADS = "simulation-threads"

# MetricRecord keys every train reply carries.
NUM_PATIENTS = "num-patients"
NUM_EVENTS = "num-events"


def site_record(name: str) -> ConfigRecord:
    return ConfigRecord({"site-name": name})


def reply_site_name(content: Any) -> str:
    """The site name in a reply's content (RecordDict)."""
    return str(content[SITE]["site-name"])


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def from_json(text: str) -> Any:
    return json.loads(text)
