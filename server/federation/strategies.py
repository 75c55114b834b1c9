"""Server-side aggregation for FedAvg, FedProx, FedAdam and FedBN, on Flower's message strategies.

We use the aggregation of `flwr.serverapp.strategy` (FedAvg / FedProx / FedAdam `aggregate_train`)
but drive the rounds ourselves (stsfl.server.orchestrator): only training sites get train
messages (held-out centres never train), the round config carries blend weights and federated
statistics, and the whole server state is checkpointed between rounds. What each strategy means
on the two sides:

- FedAvg: weighted mean of the sites' weights.
- FedProx: the same server step; the client adds mu/2 ||w - w_global||^2 to its loss
  (`prox-mu` in the train config).
- FedAdam: the weighted mean gives a pseudo-gradient (mean - global), which an Adam step on the
  server applies (Reddi et al. 2021); its moments m_t, v_t are strategy state we checkpoint.
- FedBN: the same server step as FedAvg, but every site keeps its own normalisation-layer
  parameters and running statistics on disk and never loads the server's (Li et al. 2021).
  The server still averages them, and only the held-out centres (which never trained) use
  that average.

Weighting. A site's update is weighted by its number of training *events* (summed over the
endpoints) by default, or by patients (`weighting: patients`). Why events: our Cox loss is the
negative log partial likelihood averaged over a site's events, and the pooled model we want to
match is the Cox model stratified by centre, whose log likelihood is the sum over centres of
(events_k x mean loss_k). Weighting by events therefore makes one round of FedAvg with one
full-batch gradient step per site exactly one gradient step on the pooled stratified likelihood
(tested in tests/test_fed_equivalence.py); weighting by patients over-counts centres with
heavy censoring, which carry less information about the hazard.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from stsfl.common.config import FederationConfig
from stsfl.common.fed_protocol import ARRAYS, CONFIG, METRICS, NUM_EVENTS, NUM_PATIENTS
from stsfl.common.params import arrays_to_numpy, numpy_to_arrays


class Aggregator:
    """One strategy's server step: `aggregate(round, global_arrays, replies) -> new global arrays`.

    State that must survive a restart (FedAdam's moments) is exposed by `state()` /
    `load_state()` as name -> numpy array."""

    def __init__(self, fed: FederationConfig):
        self.name = fed.strategy
        key = NUM_EVENTS if fed.weighting == "events" else NUM_PATIENTS
        common = dict(
            min_train_nodes=1,
            min_evaluate_nodes=1,
            min_available_nodes=1,
            weighted_by_key=key,
            arrayrecord_key=ARRAYS,
            configrecord_key=CONFIG,
        )
        params = fed.strategy_params
        if fed.strategy == "fedadam":
            self.strategy: FedAvg = FedAdam(
                **common, eta=params.server_lr, beta_1=params.beta_1, beta_2=params.beta_2, tau=params.tau
            )
        elif fed.strategy == "fedprox":
            self.strategy = FedProx(**common, proximal_mu=fed.recipe.train.prox_mu)
        else:  # fedavg, fedbn: the server step is a weighted mean
            self.strategy = FedAvg(**common)
        self.weight_key = key

    @property
    def keeps_norm_local(self) -> bool:
        return self.name == "fedbn"

    def aggregate(
        self, server_round: int, global_arrays: ArrayRecord, replies: Iterable[RecordDict]
    ) -> tuple[ArrayRecord, MetricRecord | None]:
        """New global arrays from the contents of the train replies (all valid, all from training sites)."""
        replies = [_Reply(content) for content in replies]
        total_weight = sum(float(r.content[METRICS][self.weight_key]) for r in replies)
        if total_weight <= 0:
            raise ValueError(
                f"the responding sites have no {self.weight_key.replace('num-', '')} to weight their updates; "
                "use `weighting: patients` or check the sites' endpoints"
            )
        if isinstance(self.strategy, FedAdam):
            # What FedOpt.configure_train records before a round: the global model the deltas refer to.
            self.strategy.current_arrays = arrays_to_numpy(global_arrays)
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:
            raise ValueError(f"round {server_round}: the strategy could not aggregate the replies")
        return _restore_dtypes(arrays, global_arrays), metrics

    def state(self) -> dict[str, np.ndarray]:
        """Checkpointable state: FedAdam's first and second moments, keyed `m/<name>`, `v/<name>`."""
        out: dict[str, np.ndarray] = {}
        for prefix in ("m", "v"):
            moments = getattr(self.strategy, f"{prefix}_t", None) or {}
            out.update({f"{prefix}/{k}": np.asarray(v) for k, v in moments.items()})
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        for prefix in ("m", "v"):
            moments = {k[len(prefix) + 1 :]: np.asarray(v) for k, v in state.items() if k.startswith(f"{prefix}/")}
            if moments and hasattr(self.strategy, f"{prefix}_t"):
                setattr(self.strategy, f"{prefix}_t", moments)


def screen_updates(global_arrays: ArrayRecord, updates: dict[str, ArrayRecord], max_norm_ratio: float) -> dict[str, str]:
    """Sites whose update must not be averaged -> why: a non-finite value, a tensor the global
    model does not have (or of another shape), or an update norm ||w_site - w_global|| more than
    `max_norm_ratio` times the median norm of the other sites' updates (a diverged or corrupted
    site; with one site only the first two checks apply). The median counts as at least 1 % of
    ||w_global||: others that barely moved (a first step of a OneCycle schedule) give no scale, and
    a DP site's noisy update is legitimately larger than theirs."""
    reference = arrays_to_numpy(global_arrays)
    rejected: dict[str, str] = {}
    norms: dict[str, float] = {}
    for site, arrays in updates.items():
        values = arrays_to_numpy(arrays)
        if values.keys() != reference.keys() or any(values[k].shape != reference[k].shape for k in reference):
            rejected[site] = "its tensors do not match the global model's names and shapes"
            continue
        bad = [k for k, v in values.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            rejected[site] = f"non-finite values (NaN/inf) in {', '.join(bad[:3])}"
            continue
        norms[site] = float(
            np.sqrt(
                sum(
                    float(np.sum((values[k].astype(np.float64) - reference[k]) ** 2))
                    for k in reference
                    if values[k].dtype.kind == "f"
                )
            )
        )
    floor = 0.01 * float(
        np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in reference.values() if v.dtype.kind == "f"))
    )
    for site, norm in norms.items():
        others = [n for s, n in norms.items() if s != site]
        typical = max(float(np.median(others)), floor) if others else 0.0
        if typical > 0 and norm > max_norm_ratio * typical:
            rejected[site] = f"update norm {norm:.3g} is more than {max_norm_ratio:g} x the other sites' median {typical:.3g}"
    return rejected


@dataclass
class _Reply:
    """The part of a reply Message that Flower's `aggregate_train` reads (valid replies only), so the
    same server step runs on replies from the Grid and in the in-process benchmarks."""

    content: RecordDict

    def has_error(self) -> bool:
        return False


def _restore_dtypes(arrays: ArrayRecord, reference: ArrayRecord) -> ArrayRecord:
    """Weighted means turn integer buffers (BatchNorm's num_batches_tracked) into floats: round them back."""
    ref = arrays_to_numpy(reference)
    out = {}
    for name, value in arrays_to_numpy(arrays).items():
        dtype = ref[name].dtype if name in ref else value.dtype
        out[name] = np.rint(value).astype(dtype) if np.issubdtype(dtype, np.integer) else value.astype(dtype, copy=False)
    return numpy_to_arrays(out)
