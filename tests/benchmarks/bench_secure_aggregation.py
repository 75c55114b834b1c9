"""What secure aggregation costs per round: the four SecAgg+ stages of stsfl.server.federation.secure_aggregation
against Flower's client module (stsfl.client.federation.secure_update -> `secaggplus_mod`), in one process,
for the parameter counts of our models and 2 -> 8 sites. Each site's "training" returns a random
update, so the figures are the protocol's own: the sites' work (key generation, key shares,
quantization and masks; summed over sites and per site), the coordinator's (forwarding shares,
summing masked vectors, recovering seeds and removing masks), the bytes a site sends up, and the
plain weighted mean of the same updates as the reference. Transport is not included (four message
waves instead of one: see bench_fed_systems.py for the cost of one wave).

    python tests/benchmarks/bench_secure_aggregation.py [--sites 2 4 8] [--models linear-cox paper]

Prints a table and writes tests/benchmarks/results/secure_aggregation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from stsfl.client.federation.secure_update import legacy_fit_records, secure_aggregation_mod
from stsfl.common.config.federation import SecureAggregationConfig
from stsfl.common.fed_protocol import ARRAYS, METRICS, NUM_EVENTS
from stsfl.common.params import numpy_to_arrays
from stsfl.server.federation.secure_aggregation import secure_round

RESULTS = Path(__file__).parent / "results" / "secure_aggregation.json"
# name -> tensor shapes (values): linear Cox on TCGA-BRCA (40), the `paper` multimodal network (~11.4 M)
MODELS = {"linear-cox": [(1, 39), (1,)], "paper": [(11_000_000,), (400_000,), (12, 12), (12,)]}


def _one_round(shapes: list[tuple[int, ...]], n_sites: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    glob = {f"t{i}": rng.normal(0, 0.05, s).astype(np.float32) for i, s in enumerate(shapes)}
    updates = {
        f"site_{k}": {n: (v + rng.normal(0, 1e-3, v.shape)).astype(np.float32) for n, v in glob.items()} for k in range(n_sites)
    }
    weights = {site: float(rng.integers(10, 60)) for site in updates}
    node_of = {site: k + 1 for k, site in enumerate(updates)}
    contexts = {
        site: Context(run_id=1, node_id=node_of[site], node_config={}, state=RecordDict(), run_config={}) for site in updates
    }
    global_record = numpy_to_arrays(glob)
    params = SecureAggregationConfig(enabled=True)
    client_s = {site: 0.0 for site in updates}
    up_bytes = {site: 0 for site in updates}

    def train_handler(msg: Message, context: Context) -> Message:
        site = next(s for s, n in node_of.items() if n == msg.metadata.dst_node_id)
        content = RecordDict(
            {
                **legacy_fit_records(
                    msg.content[ARRAYS], numpy_to_arrays(updates[site]), weights[site], params.clipping_range, site
                ),
                METRICS: MetricRecord({NUM_EVENTS: weights[site]}),
            }
        )
        return Message(content, reply_to=msg)

    def send(sites, records_for):
        replies = {}
        for site in sites:
            msg = Message(RecordDict(records_for(site)), dst_node_id=node_of[site], message_type="train")
            msg.metadata.__dict__["_message_id"] = f"{site}-{time.monotonic_ns()}"
            t0 = time.perf_counter()
            replies[site] = secure_aggregation_mod(msg, contexts[site], train_handler)
            client_s[site] += time.perf_counter() - t0
            up_bytes[site] += sum(
                len(b)
                for value in replies[site].content.config_records.values()
                for b in value.values()
                for b in (b if isinstance(b, list) else [b])
                if isinstance(b, bytes)
            )
        return replies, {}

    t0 = time.perf_counter()
    result = secure_round(send, node_of, list(updates), {ARRAYS: global_record}, list(glob), params, max(weights.values()))
    total_s = time.perf_counter() - t0
    total_w = sum(weights.values())
    t1 = time.perf_counter()
    plain = {n: sum(weights[s] * (updates[s][n].astype(np.float64) - glob[n]) for s in updates) / total_w for n in glob}
    plain_s = time.perf_counter() - t1
    error = max(float(np.abs(result.mean_update[n] - plain[n]).max()) for n in glob)
    values = sum(int(np.prod(s)) for s in shapes)
    return {
        "sites": n_sites,
        "values": values,
        "float32_bytes": 4 * values,
        "masked_bytes_up_per_site": int(np.mean(list(result.masked_bytes.values()))),
        "protocol_bytes_up_per_site": int(np.mean(list(up_bytes.values()))),
        "sites_s_total": sum(client_s.values()),
        "site_s_mean": float(np.mean(list(client_s.values()))),
        "coordinator_s": total_s - sum(client_s.values()),
        "plain_mean_s": plain_s,
        "max_abs_error_vs_plain": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    # Messages made outside a Flower process need the identity a ServerApp process has
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = 1, 1, 0
    rows = []
    for model in args.models:
        for n in args.sites:
            row = {"model": model, **_one_round(MODELS[model], n, seed=n)}
            rows.append(row)
            print(
                f"{model:10s} {n:2d} sites  values {row['values']:>11,}  site {row['site_s_mean']:7.2f} s  "
                f"coordinator {row['coordinator_s']:7.2f} s  plain mean {row['plain_mean_s']:6.3f} s  "
                f"up/site {row['protocol_bytes_up_per_site'] / 1e6:8.2f} MB (float32 {row['float32_bytes'] / 1e6:.2f} MB)  "
                f"max |error| {row['max_abs_error_vs_plain']:.2e}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "cpus": os.cpu_count(), "load_avg": os.getloadavg()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
