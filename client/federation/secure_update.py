"""A site's side of secure aggregation: Flower's SecAgg+ client stages around our train handler.

Under `secure_aggregation` the coordinator sends four train messages per round, each carrying
Flower's stage record (`secaggplus_configs`): setup (key pairs), share keys (Shamir shares of the
mask seeds, encrypted for each other site), collect masked vectors (our train handler runs, then
Flower's `secaggplus_mod` quantizes, weights and masks the update and drops every array from the
reply) and unmask (shares to remove the masks of the sum). What is masked is the update, not the
weights: `new - global` for every floating-point tensor in the global model's order, which keeps
the values inside the clipping range far better than raw weights would.

Flower's mod keeps its state (keys, shares) in the Context that the SuperNode persists between the
ClientApp processes of one run.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

log = logging.getLogger("stsfl.client")


def is_secure_round(msg: Message) -> bool:
    """Whether the message is a SecAgg+ stage (it carries Flower's stage record)."""
    return RECORD_KEY_CONFIGS in msg.content.config_records


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's SecAgg+ stages for train messages that carry its stage record; every other
    message (plain rounds, cross-site fine-tuning) goes straight to the handler."""
    if not is_secure_round(msg):
        return call_next(msg, context)
    from flwr.client.mod import secaggplus_mod  # lazily: it imports the key-agreement crypto

    return secaggplus_mod(msg, context, call_next)


def update_vector(global_arrays: ArrayRecord, new_arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """name -> float64 update (new - global) for the floating-point tensors, in the global model's order
    (integer buffers such as BatchNorm's batch counters are not aggregated under SecAgg+)."""
    out = {}
    for name, array in global_arrays.items():
        reference = array.numpy()
        if reference.dtype.kind == "f":
            out[name] = new_arrays[name].numpy().astype(np.float64) - reference.astype(np.float64)
    return out


def legacy_fit_records(
    global_arrays: ArrayRecord, new_arrays: ArrayRecord, weight: float, clipping_range: float, site: str
) -> dict:
    """The records `secaggplus_mod` reads from our reply (Flower's legacy FitRes layout): the update
    and the weight. A non-finite update is refused here, at the site: the coordinator can no
    longer screen one site's update once it is masked."""
    update = update_vector(global_arrays, new_arrays)
    bad = [name for name, value in update.items() if not np.isfinite(value).all()]
    if bad:
        raise ValueError(
            f"site {site}: the local update has non-finite values (NaN/inf) in {', '.join(bad[:3])}; "
            "it is not sent for secure aggregation"
        )
    largest = max((float(np.abs(v).max()) for v in update.values() if v.size), default=0.0)
    if largest > clipping_range:
        log.warning(
            "site %s: update values up to %.3g are clipped to the secure aggregation range +-%g", site, largest, clipping_range
        )
    return {
        "fitres.parameters": ArrayRecord({name: Array(value) for name, value in update.items()}),
        "fitres.num_examples": MetricRecord({"num_examples": int(round(weight))}),
        "fitres.metrics": ConfigRecord({}),
        "fitres.status": ConfigRecord({"code": 0, "message": "ok"}),
    }
