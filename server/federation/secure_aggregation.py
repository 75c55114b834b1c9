"""The coordinator's side of secure aggregation: one training round as Flower's SecAgg+ protocol.

Flower 1.41 ships SecAgg+ as a legacy workflow (`SecAggPlusWorkflow`) bound to the legacy
Strategy and LegacyContext; our rounds are driven by stsfl.server.orchestrator over the Message
API. So the four server stages are run here, message for message as Flower's workflow runs them,
against the unchanged client side (`flwr.client.mod.secaggplus_mod`, wrapped by
stsfl.client.federation.secure_update):

1. setup: protocol parameters -> each site's two public keys;
2. share keys: the public keys of all sampled sites -> Shamir shares of each site's mask seed and
   first private key, encrypted for each other site;
3. collect masked vectors: the shares addressed to a site + the global model and round config ->
   the site trains and returns its quantized, weighted, masked update (and its aggregate metrics
   in the clear, as in a plain round);
4. unmask: who is alive and who dropped -> shares that remove the private masks of the living and
   the pairwise masks of the dropped.

The coordinator learns the weighted mean of the updates of the sites alive at stage 3 and nothing
about one site's update. Every site is every other's neighbour (SecAgg+ with num_shares = n: a
hospital federation is small). Weights are quantized against `max_weight` (an upper bound of any
site's weight from the counts it reported in the statistics phase) so no weight ratio exceeds 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_extract,
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

from stsfl.common.config.federation import SecureAggregationConfig

MOD_RANGE = 2**32  # Flower's default modulus: masks are uniform in [0, 2^32)

# send(sites, site -> records of its train message) -> (site -> reply, site -> failure reason)
SendStage = Callable[[list[str], Callable[[str], dict[str, Any]]], tuple[dict[str, Message], dict[str, str]]]


class SecureAggregationError(RuntimeError):
    """A round's SecAgg+ could not complete (too few sites alive to unmask)."""


@dataclass
class SecureSum:
    """What one secure round leaves the coordinator with."""

    mean_update: dict[str, np.ndarray]  # weighted mean of (site weights - global), floating tensors only
    replies: dict[str, Message]  # stage-3 replies (clear aggregate metrics) of the sites in the sum
    failed: dict[str, str] = field(default_factory=dict)  # site -> why it is not in the sum
    masked_bytes: dict[str, int] = field(default_factory=dict)  # site -> bytes of its masked vector


def threshold(n_sites: int, fraction: float) -> int:
    """Shares needed to unmask: `fraction` of the round's sites, at least 2 (one survivor's 'sum'
    would be its own update)."""
    return max(2, min(n_sites, math.ceil(fraction * n_sites - 1e-9)))


def _stage(stage: str, values: dict[str, Any]) -> dict[str, Any]:
    """The stage record of one message (a new one per message: Flower's mod pops the stage key)."""
    return {
        RECORD_KEY_CONFIGS: ConfigRecord(
            {Key.STAGE: stage, **{k: (list(v) if isinstance(v, list) else v) for k, v in values.items()}}
        )
    }


def _configs(reply: Message) -> ConfigRecord:
    return reply.content.config_records[RECORD_KEY_CONFIGS]


def _route_shares(replies: dict[int, Message]) -> dict[int, tuple[list[int], list[bytes]]]:
    """node id -> (source node ids, ciphertexts) of the key shares the other sites addressed to it."""
    forward: dict[int, tuple[list[int], list[bytes]]] = {nid: ([], []) for nid in replies}
    for source, reply in replies.items():
        cfg = _configs(reply)
        for dst, ciphertext in zip(cfg[Key.DESTINATION_LIST], cfg[Key.CIPHERTEXT_LIST], strict=True):
            if dst in forward:
                forward[dst][0].append(source)
                forward[dst][1].append(ciphertext)
    return forward


def _returned_shares(replies: Iterable[Message], members: dict[int, str]) -> dict[int, list[bytes]]:
    """owner node id -> the shares of its secret that the unmask replies returned."""
    shares: dict[int, list[bytes]] = {nid: [] for nid in members}
    for reply in replies:
        cfg = _configs(reply)
        for owner, share in zip(cfg[Key.NODE_ID_LIST], cfg[Key.SHARE_LIST], strict=True):
            shares[owner].append(share)
    return shares


def _sum_masked(collected: dict[str, Message]) -> tuple[list[np.ndarray], dict[str, int]]:
    """The modular sum of the sites' masked vectors, and the bytes each site sent."""
    masked: list[np.ndarray] | None = None
    masked_bytes = {}
    for site, reply in collected.items():
        chunks = _configs(reply)[Key.MASKED_PARAMETERS]
        masked_bytes[site] = sum(len(b) for b in chunks)
        vector = [bytes_to_ndarray(b) for b in chunks]
        masked = vector if masked is None else parameters_addition(masked, vector)
    return parameters_mod(masked, MOD_RANGE), masked_bytes


def _remove_masks(
    masked: list[np.ndarray], shares: dict[int, list[bytes]], active: set[int], public_keys: dict[int, list[bytes]]
) -> list[np.ndarray]:
    """Subtract each summed site's private mask and, for a site that dropped after sharing its keys,
    its pairwise masks with the sites in the sum (from the secrets its shares rebuild)."""
    shapes = get_parameters_shape(masked)
    for nid, owner_shares in shares.items():
        secret = combine_shares(owner_shares)
        if nid in active:  # the private mask seed of a site in the sum
            masked = parameters_subtraction(masked, pseudo_rand_gen(secret, MOD_RANGE, shapes))
            continue
        for other in active:  # a site that dropped after sharing keys: remove its pairwise masks
            shared = generate_shared_key(bytes_to_private_key(secret), bytes_to_public_key(public_keys[other][0]))
            mask = pseudo_rand_gen(shared, MOD_RANGE, shapes)
            masked = parameters_addition(masked, mask) if nid > other else parameters_subtraction(masked, mask)
    return masked


def secure_round(
    send: SendStage,
    node_of: dict[str, int],
    sites: list[str],
    train_records: dict[str, Any],
    float_names: list[str],
    params: SecureAggregationConfig,
    max_weight: float,
) -> SecureSum:
    """Run the four stages over `sites`; `train_records` (global arrays) go with stage 3."""
    failed: dict[str, str] = {}
    t = threshold(len(sites), params.threshold_fraction)

    def alive(replies: dict[str, Message], errors: dict[str, str]) -> list[str]:
        failed.update(errors)
        return [s for s in sites if s in replies]

    def check(living: list[str], stage: str) -> None:
        if len(living) < t:
            raise SecureAggregationError(
                f"secure aggregation stopped at stage {stage!r}: {len(living)} site(s) alive, "
                f"{t} needed to unmask ({len(sites)} started the round; failed: "
                + "; ".join(f"{s}: {r}" for s, r in sorted(failed.items()))
                + ")"
            )

    setup = {
        Key.SAMPLE_NUMBER: len(sites),
        Key.SHARE_NUMBER: len(sites),
        Key.THRESHOLD: t,
        Key.CLIPPING_RANGE: float(params.clipping_range),
        Key.TARGET_RANGE: int(params.quantization_range),
        Key.MOD_RANGE: MOD_RANGE,
        Key.MAX_WEIGHT: float(max_weight),
    }
    replies, errors = send(sites, lambda site: _stage(Stage.SETUP, setup))
    living = alive(replies, errors)
    check(living, Stage.SETUP)
    public_keys = {node_of[s]: [_configs(replies[s])[Key.PUBLIC_KEY_1], _configs(replies[s])[Key.PUBLIC_KEY_2]] for s in living}

    keys = {str(nid): pair for nid, pair in public_keys.items()}
    replies, errors = send(living, lambda site: _stage(Stage.SHARE_KEYS, keys))
    living = alive(replies, errors)
    check(living, Stage.SHARE_KEYS)
    members = {node_of[s]: s for s in living}  # sites whose shares went out: their masks are in every later vector
    forward = _route_shares({node_of[s]: replies[s] for s in living})

    def collect(site: str) -> dict[str, Any]:
        sources, ciphertexts = forward[node_of[site]]
        return {
            **train_records,
            **_stage(Stage.COLLECT_MASKED_VECTORS, {Key.CIPHERTEXT_LIST: ciphertexts, Key.SOURCE_LIST: sources}),
        }

    collected, errors = send(living, collect)
    living = alive(collected, errors)
    check(living, Stage.COLLECT_MASKED_VECTORS)
    masked, masked_bytes = _sum_masked({s: collected[s] for s in living})

    active = {node_of[s] for s in living}
    dead = set(members) - active
    unmask = {Key.ACTIVE_NODE_ID_LIST: sorted(active), Key.DEAD_NODE_ID_LIST: sorted(dead)}
    replies, errors = send(living, lambda site: _stage(Stage.UNMASK, unmask))
    failed.update(errors)
    shares = _returned_shares(replies.values(), members)
    for nid, owner_shares in shares.items():
        if len(owner_shares) < t:
            raise SecureAggregationError(
                f"secure aggregation could not unmask: {len(owner_shares)} share(s) of site {members[nid]}'s keys "
                f"came back, {t} needed (failed: " + "; ".join(f"{s}: {r}" for s, r in sorted(failed.items())) + ")"
            )
    masked = _remove_masks(masked, shares, active, public_keys)
    total_ratio, quantized = factor_extract(parameters_mod(masked, MOD_RANGE))
    if total_ratio <= 0:
        raise SecureAggregationError("secure aggregation: the sites in the sum have no weight")
    summed = dequantize(quantized, params.clipping_range, params.quantization_range)
    offset = -(len(active) - 1) * params.clipping_range  # each site's quantized values were shifted by +clip
    scale = params.quantization_range / float(total_ratio)
    mean = {name: (vec + offset) * scale for name, vec in zip(float_names, summed, strict=True)}
    return SecureSum(mean_update=mean, replies={s: collected[s] for s in living}, failed=failed, masked_bytes=masked_bytes)
